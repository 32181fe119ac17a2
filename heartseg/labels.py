"""ACDC label conventions shared by every part of HeartSeg."""

from __future__ import annotations

import enum


class Structure(enum.StrEnum):
    """A cardiac structure, named as the record and the reports name it."""

    RV = "RV"
    MYO = "MYO"
    LV = "LV"

    @property
    def label(self) -> int:
        """The ACDC label value of this structure."""
        return _LABELS[self]

    @property
    def description(self) -> str:
        """A human-readable name."""
        return _DESCRIPTIONS[self]


_LABELS = {Structure.RV: 1, Structure.MYO: 2, Structure.LV: 3}
_DESCRIPTIONS = {
    Structure.RV: "right ventricular cavity",
    Structure.MYO: "left ventricular myocardium",
    Structure.LV: "left ventricular cavity",
}

#: Every structure, in label order.
STRUCTURES: tuple[Structure, ...] = (Structure.RV, Structure.MYO, Structure.LV)

#: The label values a reference or predicted label map may contain (0 is background).
VALID_LABELS: frozenset[int] = frozenset({0, 1, 2, 3})


class Phase(enum.StrEnum):
    """Where in the cardiac cycle a frame lies."""

    ED = "ED"
    ES = "ES"
    OTHER = "other"


def frame_phase(number: int, ed: int | None, es: int | None) -> Phase:
    """Whether frame ``number`` is the ED frame, the ES frame or another one."""
    return Phase.ED if number == ed else Phase.ES if number == es else Phase.OTHER
