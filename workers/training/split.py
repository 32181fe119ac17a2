"""The five-fold patient split of the shipped model, stratified by ACDC group.

ACDC's 100 training patients come in five groups of 20 (001-020 DCM, 021-040 HCM, 041-060 MINF,
061-080 NOR, 081-100 RV). Every fold validates on 4 patients of each group and trains on the other 80:

- fold 0 validates on the last four patients of each group (017-020, 037-040, 057-060, 077-080,
  097-100), the split of the first shipped fold, so that its figures stay comparable;
- folds 1-4 share out the remaining 16 patients of each group, 4 to a fold, after a seeded shuffle
  within the group (``numpy.random.default_rng(SPLIT_SEED)``; nnU-Net shuffles its k-fold split too,
  with seed 12345), so that a fold is not a run of consecutive patient numbers.

:data:`FOLD_VALIDATION` is the whole split; nnU-Net reads it as ``splits_final.json``
(:func:`workers.training.dataset.write_split`).
"""

from __future__ import annotations

import numpy as np

N_FOLDS = 5
SPLIT_SEED = 12345
PATIENTS_PER_GROUP = 20
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
ALL_PATIENTS: tuple[str, ...] = tuple(f"patient{n:03d}" for n in range(1, 101))


def _fold_validation() -> tuple[tuple[str, ...], ...]:
    rng = np.random.default_rng(SPLIT_SEED)
    folds: list[list[str]] = [[] for _ in range(N_FOLDS)]
    for group in range(len(GROUPS)):
        first = group * PATIENTS_PER_GROUP + 1
        numbers = list(range(first, first + PATIENTS_PER_GROUP))
        folds[0] += [f"patient{n:03d}" for n in numbers[-4:]]
        rest = [int(n) for n in rng.permutation(numbers[:-4])]
        for fold in range(1, N_FOLDS):
            folds[fold] += [f"patient{n:03d}" for n in sorted(rest[(fold - 1) * 4: fold * 4])]
    return tuple(tuple(fold) for fold in folds)


#: The validation patients of each fold (index = fold number); every patient is in exactly one.
FOLD_VALIDATION: tuple[tuple[str, ...], ...] = _fold_validation()


def fold_patients(fold: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(training, validation)`` ACDC patients of ``fold`` (0 to 4)."""
    if not 0 <= fold < N_FOLDS:
        raise ValueError(f"fold {fold} is not one of 0..{N_FOLDS - 1}")
    val = FOLD_VALIDATION[fold]
    return tuple(p for p in ALL_PATIENTS if p not in val), val


def fold_of(patient: str) -> int:
    """The fold whose validation set holds ``patient`` (the fold that never trained on it)."""
    for fold, patients in enumerate(FOLD_VALIDATION):
        if patient in patients:
            return fold
    raise KeyError(f"{patient} is not an ACDC training patient")


#: Fold 0's split, the one every single-fold figure of the shipped model was measured on.
TRAINING_PATIENTS, VALIDATION_PATIENTS = fold_patients(0)
