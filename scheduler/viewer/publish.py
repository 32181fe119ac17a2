"""``heartseg run FOLDER --publish dicomweb://...``: store a run's DICOM series and the SEGs HeartSeg wrote for
them into a PACS by STOW-RS (an Orthanc with its DICOMweb plugin will do), so that ``heartseg viewer`` shows them
to a user who has no PACS of their own.

Only studies read from a local folder of DICOM images are published (a study from a PACS has its SEGs stored
back already; NIfTI studies have no SEG). Each study's SEGs name the series they were drawn on, and only that
series' images are sent, in batches of :data:`BATCH`.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import Engine, select

from db.schema import Mask, Run, Study
from db.session import session_scope
from heartseg.enums import StudyStatus
from heartseg.errors import HeartSegError, StudyError
from heartseg.extras import require
from heartseg.settings import Settings
from heartseg.sources.dicomweb import DicomWebAddress, parse_source, store_instances
from heartseg.storage import open_store
from heartseg.studies.dicom import lenient_pydicom, read_series
from scheduler.viewer.links import viewer_route

logger = logging.getLogger(__name__)

#: Instances per STOW-RS request (a cine image is about 130 KB).
BATCH = 40


@dataclass(frozen=True)
class RunSegs:
    """A done study of a run read from a local folder, and the SEGs HeartSeg wrote for it (one per frame)."""

    study_id: int
    patient_id: str
    folder: Path
    seg_uris: tuple[str, ...]


@dataclass(frozen=True)
class Published:
    """What was stored for one study."""

    patient_id: str
    study_uid: str
    n_images: int
    n_segs: int
    viewer_url: str


def run_segs(engine: Engine, run: str) -> list[RunSegs]:
    """The run's done studies that have SEGs (with the run's model) and a local folder as their source."""
    query = (select(Study.id, Study.patient_id, Study.source_uri, Mask.seg_uri)
             .join(Run, Run.id == Study.run_id)
             .join(Mask, (Mask.study_id == Study.id) & (Mask.model_id == Run.model_id))
             .where(Run.name == run, Study.status == StudyStatus.DONE, Mask.seg_uri.is_not(None))
             .order_by(Study.patient_id, Study.id, Mask.frame))
    studies: dict[int, tuple[str, str, list[str]]] = {}
    with session_scope(engine) as session:
        for study_id, patient_id, source, seg_uri in session.execute(query):
            if seg_uri:
                studies.setdefault(study_id, (patient_id, source, []))[2].append(seg_uri)
    out = []
    for study_id, (patient_id, source, segs) in studies.items():
        folder = Path(source.removeprefix("file://"))
        if "://" in source.removeprefix("file://") or not folder.is_dir():
            logger.info("study %d: its source %s is not a local folder; not published", study_id, source)
            continue
        out.append(RunSegs(study_id, patient_id, folder, tuple(segs)))
    return out


def _batches(items: Sequence[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def publish_study(study: RunSegs, pacs: str, *, settings: Settings) -> Published:
    """STOW-RS one study's series (the one its SEGs reference) and its SEGs into the PACS ``pacs``.

    Raises
    ------
    StudyError
        A SEG that names no series, a series no longer in the folder, or a PACS that refuses (HTTP 4xx).
    StorageError
        A SEG missing from the results, or a PACS that does not answer (:class:`PacsError`).
    """
    lenient_pydicom()  # pydicom's value warnings quote values (a patient's name) into the log
    store = open_store(settings.results_uri, settings.s3_endpoint_url)
    segs = [store.get(uri) for uri in study.seg_uris]
    first = pydicom.dcmread(io.BytesIO(segs[0]), stop_before_pixels=True)
    try:
        study_uid = str(first.StudyInstanceUID)
        series_uid = str(first.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError) as exc:
        raise StudyError(study.seg_uris[0], "the SEG names no referenced series") from exc
    files = read_series(study.folder).get(series_uid)
    if not files:
        raise StudyError(study.folder, f"series {series_uid}, which the SEGs were drawn on, is not in the folder")
    target = DicomWebAddress(parse_source(pacs).base_url, study_uid).uri
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in _batches([path.read_bytes() for path in files], BATCH):
            store_instances(target, batch, auth=settings.dicomweb_auth)
        store_instances(target, segs, auth=settings.dicomweb_auth)
    logger.info("study %d: published %d images and %d SEGs", study.study_id, len(files), len(segs))
    return Published(study.patient_id, study_uid, len(files), len(segs), viewer_route(settings.viewer_url, study_uid))


def publish_run(engine: Engine, settings: Settings, run: str, pacs: str,
                on_error: Callable[[RunSegs, Exception], None]) -> list[Published]:
    """Publish every study of :func:`run_segs` into ``pacs`` (a ``dicomweb://`` URI); a study that cannot be
    published is handed to ``on_error`` and the others go on."""
    require("publishing to a PACS (--publish)", "pacs", "dicomweb_client")
    parse_source(pacs)  # a wrong URI fails before anything is read
    published = []
    for study in run_segs(engine, run):
        try:
            published.append(publish_study(study, pacs, settings=settings))
        except (HeartSegError, OSError) as exc:  # bad input, a PACS that refuses or does not answer
            on_error(study, exc)
    return published
