"""Closed sets of values that HeartSeg records, reports and passes between its parts.

Each is a ``StrEnum``: a member equals its string (the value stored in the record), so a
string from the command line or a database row converts with ``Frames("all")``. The ACDC
label conventions (``Structure``, ``Phase``) live in :mod:`heartseg.labels`.
"""

from __future__ import annotations

import enum


class Frames(enum.StrEnum):
    """Which frames of a study a run segments."""

    ED_ES = "ed-es"
    """The end-diastolic and end-systolic frames (every frame when the source does not state them)."""
    ALL = "all"
    """Every frame of the cine."""


class StudyStatus(enum.StrEnum):
    """Where a study is in its life: queued, running, segmented, done; or failed on the way."""

    QUEUED = "queued"
    RUNNING = "running"
    SEGMENTED = "segmented"
    DONE = "done"
    FAILED = "failed"


class PhaseSource(enum.StrEnum):
    """How the ED and ES frames were chosen."""

    STATED = "stated"
    """Given by the source (ACDC Info.cfg)."""
    LV_VOLUME = "lv_volume"
    """ED = largest, ES = smallest LV cavity volume over the segmented phases."""


class IndexSource(enum.StrEnum):
    """Whose masks the cardiac indices were computed from."""

    PRED = "pred"
    REF = "ref"
