"""Settings come from HEARTSEG_* variables with safe embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

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


def test_redis_visibility_timeout_must_exceed_the_hard_time_limit() -> None:
    with pytest.raises(ValidationError, match=r"HEARTSEG_VISIBILITY_TIMEOUT_S \(10\) must exceed "
                                              r"HEARTSEG_TASK_TIME_LIMIT_S \(3900\)"):
        Settings(broker_url="redis://127.0.0.1:6379/0", visibility_timeout_s=10)
    # the embedded broker re-delivers nothing on a timeout: the same values are valid there
    assert Settings(broker_url=None, visibility_timeout_s=10).visibility_timeout_s == 10


def _child_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    return {**env, "HEARTSEG_EMBEDDED_BROKER_DIR": str(tmp_path / "broker"), **variables}


def test_importing_the_celery_app_and_tasks_reads_no_settings_and_makes_nothing(tmp_path: Path) -> None:
    env = _child_env(tmp_path, HEARTSEG_BROKER_URL="redis://127.0.0.1:6379/0", HEARTSEG_VISIBILITY_TIMEOUT_S="10")
    code = "import workers.celery_app, workers.tasks, workers.pipeline; print('imported')"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "imported"), done.stderr
    assert list(tmp_path.iterdir()) == []  # no broker folders, no record


def test_the_process_app_is_made_on_first_use(tmp_path: Path) -> None:
    env = _child_env(tmp_path)
    code = ("import workers.celery_app as m; import workers.tasks; app = m.app; print(app is m.process_app(), "
            "app.conf.broker_url, sorted(t for t in app.tasks if t.startswith('heartseg')))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout.split(maxsplit=2) == ["True", "filesystem://",
                                             "['heartseg.evaluate_study', 'heartseg.segment_study']\n"], done.stderr
    assert sorted(p.name for p in (tmp_path / "broker").iterdir()) == ["control", "queue"]


def test_the_cli_reports_refused_settings_in_one_line(tmp_path: Path) -> None:
    env = _child_env(tmp_path, HEARTSEG_BROKER_URL="redis://127.0.0.1:6379/0", HEARTSEG_VISIBILITY_TIMEOUT_S="10")
    done = subprocess.run([sys.executable, "-m", "scheduler.cli", "status", "some-run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid settings: ")
    assert "HEARTSEG_VISIBILITY_TIMEOUT_S (10) must exceed HEARTSEG_TASK_TIME_LIMIT_S (3900)" in done.stderr
    assert "Traceback" not in done.stderr
