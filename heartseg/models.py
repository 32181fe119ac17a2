"""Trained nnU-Net model folders: which files make a model, its fingerprint, and trust.

Torch-free, so the scheduler can fingerprint the model it records without loading it.
nnU-Net checkpoints are Python pickles (``torch.load(weights_only=False)``): loading one
runs code, so HeartSeg loads models only from folders inside a trusted root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from heartseg.errors import HeartSegError

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
#: nnU-Net's postprocessing rules in a trained-model folder (``determine_postprocessing``'s output, read by
#: ``nnUNetv2_apply_postprocessing``): a pickle of the functions and their arguments.
POSTPROCESSING_FILE = "postprocessing.pkl"
#: The map from quality signals to a predicted Dice (:mod:`workers.quality`), fitted on out-of-fold frames.
CALIBRATION_FILE = "quality_calibration.json"


class ModelError(HeartSegError):
    """A model folder that is missing, incomplete or not trusted."""


def available_folds(model_dir: Path, checkpoint: str = DEFAULT_CHECKPOINT) -> tuple[str, ...]:
    """The folds (``"0"``..``"4"``, ``"all"``) whose ``fold_X/<checkpoint>`` exists, sorted."""
    folds = [p.name[len("fold_"):] for p in model_dir.glob("fold_*") if (p / checkpoint).is_file()]
    return tuple(sorted(folds))


def model_files(model_dir: Path, folds: Sequence[str] | None = None,
                checkpoint: str = DEFAULT_CHECKPOINT, *, postprocessing: bool = False) -> list[Path]:
    """``plans.json``, ``dataset.json``, each used fold's checkpoint, with ``postprocessing``
    ``postprocessing.pkl``, and the quality calibration (``quality_calibration.json``) when the folder has one.

    Raises
    ------
    ModelError
        When the folder, a JSON file, a requested checkpoint or the requested postprocessing is missing.
    """
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: model folder not found")
    use = tuple(str(f) for f in folds) if folds else available_folds(model_dir, checkpoint)
    if not use:
        raise ModelError(f"{model_dir}: no fold_*/{checkpoint} found; is this an nnU-Net trained-model folder?")
    files = [model_dir / "plans.json", model_dir / "dataset.json"]
    files += [model_dir / f"fold_{fold}" / checkpoint for fold in use]
    if postprocessing:
        files.append(model_dir / POSTPROCESSING_FILE)
    if (model_dir / CALIBRATION_FILE).is_file():
        files.append(model_dir / CALIBRATION_FILE)  # it makes the recorded predicted Dice
    missing = [str(f.relative_to(model_dir)) for f in files if not f.is_file()]
    if missing:
        raise ModelError(f"{model_dir}: missing {', '.join(missing)}")
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: Path, folds: Sequence[str] | None = None,
                      checkpoint: str = DEFAULT_CHECKPOINT, *, postprocessing: bool = False) -> str:
    """sha256 over the used checkpoints, ``plans.json``, ``dataset.json``, ``postprocessing.pkl`` when the masks are
    postprocessed and ``quality_calibration.json`` when present (names and contents).

    Two copies of the same model in different places have the same fingerprint; the same model with and
    without postprocessing has two (the masks differ). Without it, the fingerprint is the one of a folder
    that has no ``postprocessing.pkl``.
    """
    digest = hashlib.sha256()
    for path in model_files(model_dir, folds, checkpoint, postprocessing=postprocessing):
        digest.update(str(path.relative_to(model_dir)).encode())
        digest.update(b"\0")
        digest.update(_sha256(path).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def check_trusted(model_dir: Path, trusted_roots: Sequence[Path]) -> Path:
    """Return the resolved model folder if it lies inside a trusted root.

    Raises
    ------
    ModelError
        Naming the folder, the roots, and the setting that adds a root.
    """
    resolved = model_dir.resolve()
    roots = [root.resolve() for root in trusted_roots]
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    raise ModelError(
        f"{model_dir}: not inside a trusted model root ({', '.join(map(str, roots)) or 'none'}). nnU-Net "
        "checkpoints are pickles that run code when loaded; add the folder to HEARTSEG_TRUSTED_MODEL_ROOTS "
        "if you trust it."
    )
