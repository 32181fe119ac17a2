"""Segmentations as DICOM SEG objects (highdicom), for viewers such as OHIF and for the PACS.

One SEG per study frame (cardiac phase): a BINARY segmentation with the three ACDC
structures as segments, one SEG frame per source image and segment, each referencing the
source image it was drawn on. Coded concepts (SNOMED CT):

==============  ===========================  ===================================  ======================
Segment         Category                     Type                                 Anatomic region
==============  ===========================  ===================================  ======================
1 RV cavity     Tissue (85756007)            Blood (87612001)                     Right ventricle (53085002)
2 LV myocardium Anatomical Structure (91723000)  Left Ventricle Myocardium (49848007)  --
3 LV cavity     Tissue (85756007)            Blood (87612001)                     Left ventricle (87878005)
==============  ===========================  ===================================  ======================

The cavities are encoded as the blood pool of each ventricle, since SNOMED CT has no
concept of a ventricle's cavity in DICOM's segmentation context groups.

UIDs are derived from the source series, the model fingerprint and the frame, so writing
the same segmentation again (a re-delivered task) makes the same instance, and a PACS
keeps one copy.

Scanners write the direction cosines of one stack's slices with differences in the last
decimals; the cine reader takes them as one orientation within ``ORIENTATION_TOLERANCE``,
and so does the SEG (highdicom wants them equal): its source images all carry the first
slice's orientation, on copies of the datasets.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from heartseg.errors import StudyError
from heartseg.extras import MissingExtraError
from heartseg.labels import Structure
from heartseg.studies.dicom import ORIENTATION_TOLERANCE, read_dataset

try:
    import highdicom as hd
except ModuleNotFoundError as exc:  # installed by the [worker] extra
    if exc.name != "highdicom":
        raise
    raise MissingExtraError("writing DICOM SEGs", "worker", ["highdicom"]) from exc

logger = logging.getLogger(__name__)

#: Series number given to HeartSeg's SEG series (a free number, high enough not to clash with scanners').
SEG_SERIES_NUMBER = 9901
SOFTWARE = "HeartSeg"


@dataclass(frozen=True)
class _Segment:
    structure: Structure
    label: str
    category: Code
    type: Code
    region: Code | None


SEGMENTS = (
    _Segment(Structure.RV, "RV cavity", codes.SCT.Tissue, codes.SCT.Blood, codes.SCT.RightVentricle),
    _Segment(Structure.MYO, "LV myocardium", codes.SCT.AnatomicalStructure, codes.SCT.LeftVentricleMyocardium, None),
    _Segment(Structure.LV, "LV cavity", codes.SCT.Tissue, codes.SCT.Blood, codes.SCT.LeftVentricle),
)


def algorithm_identification(fingerprint: str) -> hd.AlgorithmIdentificationSequence:
    """HeartSeg's nnU-Net v2 model, identified by its fingerprint."""
    return hd.AlgorithmIdentificationSequence(
        name="HeartSeg nnU-Net v2", family=codes.DCM.ArtificialIntelligence, version=fingerprint[:64],
        source="HeartSeg", parameters={"model_fingerprint": fingerprint})


def segment_descriptions(fingerprint: str) -> list[hd.seg.SegmentDescription]:
    """The three ACDC structures as SEG segments, numbered by their ACDC label, in HeartSeg's display colours."""
    algorithm = algorithm_identification(fingerprint)
    return [hd.seg.SegmentDescription(
        segment_number=segment.structure.label, segment_label=segment.label,
        segmented_property_category=segment.category, segmented_property_type=segment.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        anatomic_regions=[segment.region] if segment.region is not None else None,
        tracking_uid=generate_uid(entropy_srcs=["heartseg-segment", segment.label]), tracking_id=segment.label,
        display_color=hd.color.CIELabColor.from_string(segment.structure.colour))
        for segment in SEGMENTS]


def seg_uids(series_uid: str, fingerprint: str, frame: int) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SEG of one frame: stable for the same inputs."""
    series = generate_uid(entropy_srcs=["heartseg-seg-series", series_uid, fingerprint])
    instance = generate_uid(entropy_srcs=["heartseg-seg-instance", series_uid, fingerprint, str(frame)])
    return series, instance


def read_sources(files: Sequence[str | Path]) -> list[pydicom.Dataset]:
    """The source images of one frame, in slice order, with invalid patient dates blanked.

    Anonymised data often carries dates such as ``00000000``, which highdicom cannot copy
    into the SEG; such a value is made empty (type 2: present, unknown).
    """
    sources: list[pydicom.Dataset] = [read_dataset(path) for path in files]
    for dataset in sources:
        for keyword in ("PatientBirthDate", "StudyDate"):
            if not _valid_date(dataset.get(keyword)):
                setattr(dataset, keyword, "")
    frames_of_reference = {dataset.get("FrameOfReferenceUID") for dataset in sources}
    if len(frames_of_reference) > 1:
        # Some anonymisers (Sunnybrook's among them) give every slice its own FrameOfReferenceUID although the
        # positions share one patient space. The reader placed the slices together, so the SEG does too, in
        # the first slice's frame of reference; its frames still reference each source image by SOP instance.
        logger.warning("the series' %d slices carry %d frames of reference; the SEG uses the first",
                       len(sources), len(frames_of_reference))
        for dataset in sources:
            dataset.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    return sources


def _valid_date(value: object) -> bool:
    if value in (None, ""):
        return True
    try:
        pydicom.valuerep.DA(value)
    except ValueError:
        return False
    return True


def build_seg(labels: np.ndarray, sources: Sequence[pydicom.Dataset], *, fingerprint: str, frame: int,
              version: str) -> hd.seg.Segmentation:
    """The DICOM SEG of one frame's label map ``(x, y, z)`` (column, row, slice) over its source images.

    ``sources[k]`` is the image of slice ``k``; the label map must have its rows, columns and
    number of slices.
    """
    columns, rows, n_slices = labels.shape
    if n_slices != len(sources) or any((int(ds.Rows), int(ds.Columns)) != (rows, columns) for ds in sources):
        raise StudyError(getattr(sources[0], "filename", ""), f"label map {labels.shape} does not fit "
                         f"{len(sources)} source images of {sources[0].Rows}x{sources[0].Columns}")
    sources = shared_orientation(sources)
    pixel_array = np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(np.uint8)  # (slice, row, column)
    series_uid, instance_uid = seg_uids(str(sources[0].SeriesInstanceUID), fingerprint, frame)
    # highdicom warns about odd patient names quoting the name: never let a patient's name reach a log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _segmentation(pixel_array, sources, fingerprint, frame, version, series_uid, instance_uid)


def shared_orientation(sources: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The source images with one ImageOrientationPatient, the first's, where every other differs from it by
    at most ``ORIENTATION_TOLERANCE`` (the cine reader's tolerance); a source that needs it is copied, never
    changed. :class:`StudyError` naming the file when one differs by more.
    """
    reference = sources[0].get("ImageOrientationPatient")
    if reference is None:
        return list(sources)  # nothing to share; highdicom says what is missing
    first = np.asarray([float(v) for v in reference])
    shared = []
    for dataset in sources:
        orientation = dataset.get("ImageOrientationPatient")
        cosines = np.asarray([float(v) for v in orientation]) if orientation is not None else None
        if cosines is None or cosines.shape != first.shape or not np.allclose(cosines, first,
                                                                              atol=ORIENTATION_TOLERANCE):
            raise StudyError(getattr(dataset, "filename", "") or "", "ImageOrientationPatient differs from the "
                             f"first slice's by more than {ORIENTATION_TOLERANCE}; the images are not one stack")
        if list(orientation) != list(reference):
            dataset = copy.deepcopy(dataset)
            dataset.ImageOrientationPatient = copy.deepcopy(reference)
        shared.append(dataset)
    return shared


def _segmentation(pixel_array: np.ndarray, sources: Sequence[pydicom.Dataset], fingerprint: str, frame: int,
                  version: str, series_uid: str, instance_uid: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=list(sources), pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(fingerprint),
        series_instance_uid=series_uid, series_number=SEG_SERIES_NUMBER, sop_instance_uid=instance_uid,
        instance_number=frame, manufacturer=SOFTWARE, manufacturer_model_name="HeartSeg nnU-Net v2",
        software_versions=version, device_serial_number=fingerprint[:16],
        series_description="HeartSeg cardiac segmentation", content_label="HEARTSEG",
        content_description=f"RV cavity, LV myocardium, LV cavity; cardiac phase {frame}",
        omit_empty_frames=False)


def encode_seg(segmentation: hd.seg.Segmentation) -> bytes:
    """The SEG as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    segmentation.save_as(buffer)
    return buffer.getvalue()


def seg_labels(segmentation: hd.seg.Segmentation, source_uids: Sequence[str]) -> np.ndarray:
    """The ACDC label map ``(x, y, z)`` of a SEG written by :func:`build_seg`; slice ``k`` is the frame
    drawn on the source image ``source_uids[k]``."""
    volume = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source_uids), segment_numbers=[s.structure.label for s in SEGMENTS],
        combine_segments=True, relabel=False)
    return np.transpose(np.asarray(volume), (2, 1, 0)).astype(np.uint8)


def referenced_instances(segmentation: hd.seg.Segmentation) -> set[str]:
    """SOPInstanceUIDs of the source images that the SEG's frames reference."""
    return {ref.ReferencedSOPInstanceUID
            for item in segmentation.PerFrameFunctionalGroupsSequence
            for derivation in item.DerivationImageSequence
            for ref in derivation.SourceImageSequence}
