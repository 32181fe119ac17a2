"""The patient split of the shipped model: 80 patients train, 20 validate.

Stratified by ACDC group (20 patients each; 001-020 DCM, 021-040 HCM, 041-060 MINF,
061-080 NOR, 081-100 RV): the last four patients of each group validate.
"""

from __future__ import annotations

VALIDATION_PATIENTS: tuple[str, ...] = tuple(
    f"patient{n:03d}" for start in (17, 37, 57, 77, 97) for n in range(start, start + 4)
)
TRAINING_PATIENTS: tuple[str, ...] = tuple(
    f"patient{n:03d}" for n in range(1, 101) if f"patient{n:03d}" not in VALIDATION_PATIENTS
)
