"""Settings come from HEARTSEG_* variables with safe embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartseg.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "BROKER_URL", "RESULTS_URI", "MODEL_DIR", "SHARED_DATA"):
        monkeypatch.delenv(f"HEARTSEG_{name}", raising=False)
    settings = Settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.broker_url is None
    assert settings.shared_data == Path("../shared/data")
    assert settings.acdc_training_dir == Path("../shared/data/acdc/training")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEARTSEG_DATABASE_URL", "postgresql+psycopg://127.0.0.1:5432/test")
    monkeypatch.setenv("HEARTSEG_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("HEARTSEG_RESULTS_URI", "s3://bucket/masks")
    monkeypatch.setenv("HEARTSEG_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTSEG_SHARED_DATA", str(tmp_path / "shared"))
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://127.0.0.1:5432/test"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.results_uri == "s3://bucket/masks"
    assert settings.model_dir == tmp_path
    assert settings.acdc_training_dir == tmp_path / "shared" / "acdc" / "training"
