"""From the record to the viewer: the viewer URL of a study whose source is in the viewer's PACS
(``dicomweb://HOST:PORT/PATH/studies/<uid>/series/<uid>``), OHIF's route ``/viewer?StudyInstanceUIDs=<uid>``.

``heartseg report RUN --json`` gives each study it lists a ``viewer_url`` (:func:`add_viewer_links`), and
``heartseg report RUN`` prints the links, flagged studies first (:func:`run_viewer_links`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import Engine

from heartseg.errors import StudyError
from heartseg.settings import Settings

#: OHIF's route of its default (longitudinal) mode, which shows the SEGs over the images.
VIEWER_ROUTE = "viewer"


def viewer_route(viewer_url: str, study_uid: str) -> str:
    """The viewer's URL of one study: ``<viewer_url>/viewer?StudyInstanceUIDs=<uid>``."""
    return f"{viewer_url.rstrip('/')}/{VIEWER_ROUTE}?StudyInstanceUIDs={quote(study_uid, safe='.')}"


def _same_service(a: str, b: str) -> bool:
    """Two DICOMweb roots name the same service (the host's case and a trailing slash aside)."""
    first, second = urlsplit(a), urlsplit(b)
    return (first.scheme, first.netloc.lower(), first.path.rstrip("/")) == (
        second.scheme, second.netloc.lower(), second.path.rstrip("/"))


@dataclass(frozen=True)
class ViewerLinks:
    """Where the viewer is, and which PACS it shows."""

    viewer_url: str
    """Where users open the viewer (``HEARTSEG_VIEWER_URL``)."""
    pacs_url: str | None = None
    """The viewer's PACS over HTTP(S) (from ``HEARTSEG_DICOMWEB_URL``); None: any DICOMweb source gets a link."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ViewerLinks:
        """The links of ``HEARTSEG_VIEWER_URL`` to the PACS of ``HEARTSEG_DICOMWEB_URL``."""
        from heartseg.sources.dicomweb import parse_source

        pacs = parse_source(settings.dicomweb_url).base_url if settings.dicomweb_url else None
        return cls(settings.viewer_url, pacs)

    def study_url(self, source_uri: str) -> str | None:
        """The viewer URL of the study a source names; None for a source that is not a study in a DICOMweb
        service, or in another PACS than the viewer's."""
        from heartseg.sources.dicomweb import is_dicomweb, parse_source  # the sources package, only when asked

        if not is_dicomweb(source_uri):
            return None
        try:
            address = parse_source(source_uri)
        except StudyError:
            return None
        if not address.study_uid or (self.pacs_url and not _same_service(address.base_url, self.pacs_url)):
            return None
        return viewer_route(self.viewer_url, address.study_uid)


def study_links(links: ViewerLinks, flags: Iterable[Mapping[str, Any]],
                *studies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per study with a viewer URL (``study_id``, ``patient_id``, ``flagged``, ``severity``,
    ``viewer_url``): the flagged ones first, in the order of ``flags`` (worst first), then the others by patient.

    ``studies`` are rows with ``study_id``, ``patient_id`` and ``source_uri`` (a study may come more than once).
    """
    severity = {int(row["study_id"]): row.get("severity") for row in flags}
    found: dict[int, dict[str, Any]] = {}
    for row in (row for rows in studies for row in rows):
        study_id = int(row["study_id"])
        url = found.get(study_id, {}).get("viewer_url") or links.study_url(str(row["source_uri"]))
        if url:
            found[study_id] = {"study_id": study_id, "patient_id": row["patient_id"], "flagged": study_id in severity,
                               "severity": severity.get(study_id), "viewer_url": url}
    order = {study_id: n for n, study_id in enumerate(severity)}
    return sorted(found.values(), key=lambda s: (s["study_id"] not in order, order.get(s["study_id"], 0),
                                                 str(s["patient_id"]), s["study_id"]))


def add_viewer_links(document: MutableMapping[str, Any], links: ViewerLinks,
                     *studies: Iterable[Mapping[str, Any]]) -> None:
    """Give the report summary's studies their viewer URL (null where none): a ``viewer_url`` in each entry of
    ``flags``, ``worst`` and ``failures.studies``, and the top-level ``viewer``: ``url`` (the viewer) and
    ``studies`` (:func:`study_links`, flagged first)."""
    listed = study_links(links, document["flags"], *studies)
    urls = {entry["study_id"]: entry["viewer_url"] for entry in listed}
    for entry in [*document["flags"], *document["worst"], *document["failures"]["studies"]]:
        entry["viewer_url"] = urls.get(entry["study_id"])
    document["viewer"] = {"url": links.viewer_url, "studies": listed}


def run_viewer_links(engine: Engine, run: str, links: ViewerLinks) -> list[dict[str, Any]]:
    """:func:`study_links` of a run, from the record (its studies with masks, and its failed ones); nothing read
    beyond one look when no study of the run comes from DICOMweb (``status`` asks on every call)."""
    from db import queries
    from scheduler.report_page.summary import flagged_studies

    if not queries.run_has_dicomweb_studies(engine, run):
        return []
    return study_links(links, flagged_studies(queries.run_qc(engine, run)), queries.run_study_masks(engine, run),
                       queries.run_failed_studies(engine, run))
