"""What every storage scheme offers: find studies under a URI, fetch one to a local copy, release it."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

from heartseg.errors import StudyError


@dataclass(frozen=True)
class Selection:
    """Which studies of a source to take, where the scheme can choose (a PACS: by study and series UID)."""

    studies: Sequence[str] = field(default_factory=tuple)
    """Study identifiers to take; empty: every study found."""
    series: str | None = None
    """The series to take within each study; None: the scheme's own choice."""

    def __bool__(self) -> bool:
        return bool(self.studies) or self.series is not None


@dataclass(frozen=True)
class Discovery:
    """What :meth:`StudySource.discover` found under a URI."""

    sources: list[str]
    """The studies' sources, sorted."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(entry, reason)`` for each entry looked at and not taken as a study (a folder without ``Info.cfg``,
    an empty file, an object key that would leave the cache, ...), so that nothing is left out unseen."""


class StudySource(abc.ABC):
    """One storage scheme (a folder, ``s3://``, ``dicomweb://``, ...).

    A study's source string (as recorded in ``studies.source_uri``) names one study in the
    scheme. :meth:`fetch` makes a local copy that :func:`heartseg.studies.open_study` reads;
    the stage that fetched it calls :meth:`release` when it is done with the pixels.
    """

    #: Whether :meth:`discover` honours a :class:`Selection` (``heartseg submit --study/--series``).
    selects: bool = False

    @abc.abstractmethod
    def discover(self, uri: str, selection: Selection) -> Discovery:
        """The sources of the studies under ``uri``, and the entries skipped with the reason.

        Raises
        ------
        StudyError
            When ``uri`` cannot be read or holds no study.
        """

    @abc.abstractmethod
    def fetch(self, source: str) -> str:
        """A local path (or ``DATASET_DIR#study``) that :func:`~heartseg.studies.open_study` reads.

        Raises
        ------
        StudyError
            When the study is not there or cannot be copied (bad input: not retried).
        StorageError
            When the storage does not answer (transient: the task retries).
        """

    def release(self, source: str) -> None:
        """Delete the local copy made by :meth:`fetch` (nothing to do for a local folder)."""
        return None

    def store_back(self, source: str, payloads: Sequence[bytes]) -> bool:
        """Store DICOM objects made from the study (SEGs) where it came from; False where the scheme
        keeps nothing besides the studies (folders, S3: results go to the results store only)."""
        return False

    def check_selection(self, uri: str, selection: Selection) -> None:
        """Refuse a selection this scheme cannot honour."""
        if selection and not self.selects:
            raise StudyError(uri, "--study and --series apply to dicomweb:// sources only")
