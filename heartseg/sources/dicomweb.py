"""Studies in a PACS over DICOMweb: find cine series (QIDO-RS), fetch them (WADO-RS), store SEGs back (STOW-RS).

A DICOMweb source is written ``dicomweb://HOST:PORT/PATH/studies/<StudyUID>/series/<SeriesUID>``
(``dicomwebs://`` for HTTPS): the service's own resource path with the scheme naming the
protocol, so a study's source in the record says exactly where it lives. HTTP basic
credentials come from ``HEARTSEG_DICOMWEB_AUTH`` (``user:password``), never from the URI.

Errors: a study or series the PACS does not have is bad input (:class:`StudyError`); a PACS
that does not answer is transient (:class:`PacsError`, a :class:`StorageError`), so the task retries.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from heartseg.errors import StudyError
from heartseg.extras import require
from heartseg.paths import inside, key_part
from heartseg.sources.base import Discovery, Selection, StudySource
from heartseg.sources.s3 import remove_copy
from heartseg.storage import StorageError
from heartseg.studies.dicom import lenient_pydicom

if TYPE_CHECKING:
    from dicomweb_client import DICOMwebClient

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
_SOURCE = re.compile(r"^(?P<scheme>dicomwebs?)://(?P<rest>[^?#]+?)(?:/studies/(?P<study>[0-9.]+)"
                     r"(?:/series/(?P<series>[0-9.]+))?)?/?$")
#: DICOM attribute tags as QIDO-RS returns them.
SERIES_UID_TAG, MODALITY_TAG, N_INSTANCES_TAG = "0020000E", "00080060", "00201209"
STUDY_UID_TAG = "0020000D"


class PacsError(StorageError):
    """The PACS did not answer, or refused a request that should have worked; worth retrying."""


@dataclass(frozen=True)
class DicomWebAddress:
    """Where a study lives in a DICOMweb service."""

    base_url: str
    """The service root over HTTP(S), e.g. ``http://127.0.0.1:8042/dicom-web``."""
    study_uid: str | None = None
    series_uid: str | None = None

    @property
    def uri(self) -> str:
        """The ``dicomweb://`` form recorded as the study's source."""
        scheme, rest = self.base_url.split("://", 1)
        text = f"{'dicomwebs' if scheme == 'https' else 'dicomweb'}://{rest}"
        if self.study_uid:
            text += f"/studies/{self.study_uid}"
            if self.series_uid:
                text += f"/series/{self.series_uid}"
        return text


def is_dicomweb(source: str) -> bool:
    """Whether ``source`` names a DICOMweb service."""
    return source.split("://", 1)[0] in SCHEMES


def parse_source(uri: str) -> DicomWebAddress:
    """Split a ``dicomweb://`` URI into the service URL and the study and series UIDs it names."""
    match = _SOURCE.match(uri)
    if not match:
        raise StudyError(uri, "not a DICOMweb source (dicomweb://HOST:PORT/PATH[/studies/UID[/series/UID]])")
    return DicomWebAddress(f"{SCHEMES[match['scheme']]}://{match['rest']}", match["study"], match["series"])


def make_client(base_url: str, auth: str | None = None) -> DICOMwebClient:
    """A ``dicomweb_client.DICOMwebClient`` for the service (basic auth ``user:password`` when given)."""
    require("a dicomweb:// source", "pacs", "dicomweb_client")
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    if auth:
        user, _, password = auth.partition(":")
        session.auth = (user, password)
    # permissive_uid: real archives hold UIDs with leading zeros in a component (Sunnybrook's do).
    client = DICOMwebClient(url=base_url, session=session, permissive_uid=True, timeout=60)
    # The client's own retries (every error, five tries over 30 s) are off: a PACS that does not answer is a
    # PacsError at once, which a task retries on its own schedule and a report or submit reports in one line.
    client.set_http_retry_params(retry=False)
    return client


def _value(item: Mapping[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or None."""
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _call(uri: str, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a client call, turning HTTP errors into StudyError (4xx) or PacsError (no answer, 5xx)."""
    import requests

    try:
        return function(*args, **kwargs)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and 400 <= status < 500:
            raise StudyError(uri, f"the PACS refused to {what} (HTTP {status})") from exc
        raise PacsError(f"{uri}: the PACS failed to {what} (HTTP {status})") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise PacsError(f"{uri}: the PACS does not answer ({type(exc).__name__})") from exc


def discover_dicomweb(uri: str, study_uids: Sequence[str] = (), *, series_uid: str | None = None,
                      auth: str | None = None) -> list[str]:
    """One source per study: its MR series with the most instances (the cine), or ``series_uid``.

    The studies are those named in ``uri`` or ``study_uids``; with neither, every study in the
    PACS with an MR series.
    """
    source = parse_source(uri)
    client = make_client(source.base_url, auth)
    studies = list(study_uids) or ([source.study_uid] if source.study_uid else [])
    if not studies:
        studies = _all_mr_studies(uri, client)
    chosen_series = series_uid or source.series_uid
    sources = []
    for study in studies:
        if chosen_series:
            sources.append(DicomWebAddress(source.base_url, study, chosen_series).uri)
            continue
        series = _call(uri, f"search study {study}", client.search_for_series, study,
                       fields=["NumberOfSeriesRelatedInstances"])
        mr = [s for s in series if _value(s, MODALITY_TAG) == "MR"]
        if not mr:
            raise StudyError(f"{uri} study {study}", "no MR series in this study")
        best = max(mr, key=lambda s: int(_value(s, N_INSTANCES_TAG) or 0))
        sources.append(DicomWebAddress(source.base_url, study, str(_value(best, SERIES_UID_TAG))).uri)
    if not sources:
        raise StudyError(uri, "no studies with an MR series found")
    return sources


def _all_mr_studies(uri: str, client: DICOMwebClient, page: int = 500) -> list[str]:
    """Every study with an MR series, page by page (some servers ignore ``offset``: stop when nothing is new)."""
    found: dict[str, None] = {}
    while True:
        items = _call(uri, "search for studies", client.search_for_studies,
                      search_filters={"ModalitiesInStudy": "MR"}, limit=page, offset=len(found))
        new = [str(_value(item, STUDY_UID_TAG)) for item in items]
        fresh = [uid for uid in new if uid not in found]
        found.update(dict.fromkeys(fresh))
        if len(new) < page or not fresh:
            return list(found)


def cached_series(uri: str, cache_dir: Path) -> Path:
    """The folder a source's series is downloaded to: ``<cache_dir>/dicomweb/<series UID>``, the UID encoded
    as one segment by :func:`heartseg.paths.key_part` (a UID ``..`` gets a folder of its own, inside)."""
    return inside(cache_dir, "dicomweb", key_part(parse_source(uri).series_uid or ""))


def fetch_series(uri: str, cache_dir: Path, *, auth: str | None = None) -> Path:
    """Download the series a source names into ``cache_dir`` (afresh); returns its folder.

    The stage that fetched it deletes it when done (:meth:`DicomWebSource.release`).
    """
    source = parse_source(uri)
    if not source.study_uid or not source.series_uid:
        raise StudyError(uri, "a DICOMweb study source must name a study and a series")
    target = cached_series(uri, cache_dir)
    client = make_client(source.base_url, auth)
    lenient_pydicom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = _call(uri, "retrieve the series", client.retrieve_series, source.study_uid, source.series_uid)
        if not datasets:
            raise StudyError(uri, "the series has no instances")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for number, dataset in enumerate(datasets):
            dataset.save_as(target / f"{number:05d}.dcm", enforce_file_format=True)
    logger.info("fetched %d instances of series %s", len(datasets), source.series_uid)
    return target


def store_instances(uri: str, payloads: Sequence[bytes], *, auth: str | None = None) -> None:
    """STOW-RS the DICOM files ``payloads`` (HeartSeg's SEGs) into the study a source names."""
    import pydicom

    source = parse_source(uri)
    client = make_client(source.base_url, auth)
    datasets = [pydicom.dcmread(io.BytesIO(payload)) for payload in payloads]
    _call(uri, "store the segmentations", client.store_instances,
          datasets, study_instance_uid=source.study_uid)


class DicomWebSource(StudySource):
    """Cine series in a PACS over DICOMweb; each is fetched into ``cache_dir`` by WADO-RS, and the SEGs made
    from it are stored back into its study by STOW-RS."""

    selects = True

    def __init__(self, cache_dir: Path, auth: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.auth = auth

    def discover(self, uri: str, selection: Selection) -> Discovery:
        """See :func:`discover_dicomweb`."""
        return Discovery(discover_dicomweb(uri, selection.studies, series_uid=selection.series, auth=self.auth))

    def fetch(self, source: str) -> str:
        """See :func:`fetch_series`."""
        return str(fetch_series(source, self.cache_dir, auth=self.auth))

    def release(self, source: str) -> None:
        """Delete the fetched series (only ever a folder inside the cache; nothing for a source that was
        refused, so nothing was fetched)."""
        try:
            folder = cached_series(source, self.cache_dir)
        except StudyError:
            return
        remove_copy(folder)

    def store_back(self, source: str, payloads: Sequence[bytes]) -> bool:
        """See :func:`store_instances`."""
        store_instances(source, payloads, auth=self.auth)
        return True
