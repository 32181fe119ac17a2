"""Model folders: fingerprint and trust, without loading torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heartseg.models import ModelError, available_folds, check_trusted, model_fingerprint
from heartseg.settings import Settings


def fake_model(root: Path) -> Path:
    model = root / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__2d"
    for fold in ("0", "1"):
        (model / f"fold_{fold}").mkdir(parents=True)
        (model / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(f"weights {fold}".encode())
    (model / "plans.json").write_text("{}")
    (model / "dataset.json").write_text('{"labels": {}}')
    return model


def test_fingerprint_depends_on_content_not_location(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(model, copy)
    assert available_folds(model) == ("0", "1")
    assert model_fingerprint(model) == model_fingerprint(copy)
    assert model_fingerprint(model, ["0"]) != model_fingerprint(model)
    (copy / "plans.json").write_text('{"changed": true}')
    assert model_fingerprint(model) != model_fingerprint(copy)


def test_incomplete_model_is_a_clear_error(tmp_path: Path) -> None:
    model = fake_model(tmp_path)
    (model / "dataset.json").unlink()
    with pytest.raises(ModelError, match=r"missing dataset\.json"):
        model_fingerprint(model)
    with pytest.raises(ModelError, match=r"missing dataset\.json, fold_3/checkpoint_final\.pth"):
        model_fingerprint(model, ["0", "3"])
    with pytest.raises(ModelError, match="model folder not found"):
        model_fingerprint(tmp_path / "nothing")


def test_untrusted_folder_is_refused(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "downloads")
    with pytest.raises(ModelError, match=r"not inside a trusted model root.*HEARTSEG_TRUSTED_MODEL_ROOTS"):
        check_trusted(model, Settings().trusted_roots)
    settings = Settings(trusted_model_roots=[tmp_path / "downloads"])
    assert check_trusted(model, settings.trusted_roots) == model.resolve()
    # a path that only looks like it is inside a root
    with pytest.raises(ModelError):
        check_trusted(tmp_path / "downloads-evil", [tmp_path / "downloads"])


def test_the_shipped_model_is_trusted_by_default() -> None:
    settings = Settings()
    assert check_trusted(settings.model_dir, settings.trusted_roots) == settings.model_dir.resolve()
