"""ACDC label conventions shared by every part of HeartSeg."""

from __future__ import annotations

import enum
import re

from heartseg.errors import ConfigurationError


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

    @property
    def colour(self) -> str:
        """Its display colour (``#rrggbb``): in the report's figures and montages, and in the DICOM SEGs, whose
        viewers (OHIF) show the segment in it."""
        return _COLOURS[self]


_LABELS = {Structure.RV: 1, Structure.MYO: 2, Structure.LV: 3}
#: Colour-blind-safe enough to tell apart over a grey image: blue, yellow, red.
_COLOURS = {Structure.RV: "#33a3ff", Structure.MYO: "#ffd21f", Structure.LV: "#ff3b3b"}
_DESCRIPTIONS = {
    Structure.RV: "right ventricular cavity",
    Structure.MYO: "left ventricular myocardium",
    Structure.LV: "left ventricular cavity",
}

#: Every structure, in label order.
STRUCTURES: tuple[Structure, ...] = (Structure.RV, Structure.MYO, Structure.LV)

#: The label values a reference or predicted label map may contain (0 is background).
VALID_LABELS: frozenset[int] = frozenset({0, 1, 2, 3})


#: How ACDC numbers the structures (the default numbering of label maps).
ACDC_NUMBERING: dict[Structure, int] = dict(_LABELS)

_NUMBERING_ITEM = re.compile(r"\s*([A-Za-z]+)\s*=\s*([0-9]+)\s*")


def parse_label_numbering(text: str, option: str = "--labels") -> dict[Structure, int]:
    """Parse a numbering such as ``RV=1,MYO=2,LV=3``: each structure once, distinct positive integers.

    Raises :class:`ConfigurationError` naming ``option`` and what is wrong.
    """
    expected = ",".join(f"{s.value}=N" for s in STRUCTURES)
    numbering: dict[Structure, int] = {}
    for item in text.split(","):
        match = _NUMBERING_ITEM.fullmatch(item)
        if match is None:
            raise ConfigurationError(f"{option} {text!r}: {item.strip()!r} is not NAME=VALUE; expected {expected}")
        name, value = match.group(1), int(match.group(2))
        if name not in Structure.__members__:
            raise ConfigurationError(f"{option} {text!r}: unknown structure {name!r}; expected RV, MYO and LV")
        structure = Structure(name)
        if structure in numbering:
            raise ConfigurationError(f"{option} {text!r}: {name} is given more than once")
        if value <= 0:
            raise ConfigurationError(f"{option} {text!r}: {name}={value} must be a positive integer (0 is background)")
        if value in numbering.values():
            raise ConfigurationError(f"{option} {text!r}: value {value} is given to more than one structure")
        numbering[structure] = value
    missing = [s.value for s in STRUCTURES if s not in numbering]
    if missing:
        raise ConfigurationError(f"{option} {text!r}: {', '.join(missing)} missing; expected {expected}")
    return numbering


def format_label_numbering(numbering: dict[Structure, int]) -> str:
    """``RV=1,MYO=2,LV=3`` form of a numbering, in label-value order."""
    return ",".join(f"{s.value}={v}" for s, v in sorted(numbering.items(), key=lambda item: item[1]))


class Phase(enum.StrEnum):
    """Where in the cardiac cycle a frame lies."""

    ED = "ED"
    ES = "ES"
    OTHER = "other"


def frame_phase(number: int, ed: int | None, es: int | None) -> Phase:
    """Whether frame ``number`` is the ED frame, the ES frame or another one."""
    return Phase.ED if number == ed else Phase.ES if number == es else Phase.OTHER
