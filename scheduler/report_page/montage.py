"""Overlay montages of single studies: the image from the study's source and the predicted masks from
the results store, shown in a radiological viewer's orientation (:func:`plane_layout`), ED and ES at a
basal, a mid and an apical slice.

matplotlib, scikit-image, nibabel and the study readers are imported inside the functions that need them.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from heartseg.errors import HeartSegError
from heartseg.labels import STRUCTURES, Phase, Structure
from heartseg.settings import Settings
from scheduler.report_page.figures import COLOURS, new_figure, save_png
from scheduler.report_page.summary import ReportData, masks_by_study, study_mean_dice

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_PHASES = (Phase.ED, Phase.ES)


class ReportError(HeartSegError):
    """A part of the report that could not be made (a study's montage: its source or masks unreadable)."""


# --- loading a study's images and masks ---


def read_mask(data: bytes, uri: str) -> npt.NDArray[np.uint8]:
    """The labels of a gzip'd NIfTI mask as the segment stage writes it."""
    import nibabel as nib

    try:
        image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
        return np.asarray(image.dataobj).astype(np.uint8)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise ReportError(f"{uri}: cannot read the mask ({exc})") from exc


@dataclass(frozen=True)
class StudyImages:
    """What a montage draws: per phase the image and the predicted labels, in voxel order (x, y, z)."""

    images: dict[str, npt.NDArray[np.float32]]
    labels: dict[str, npt.NDArray[np.uint8]]
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]


def load_study_images(settings: Settings, source_uri: str, masks: Mapping[str, Mapping[str, Any]]) -> StudyImages:
    """Fetch the study from its source (released again at once) and its ED/ES masks from the results store."""
    from heartseg.sources import load_study, source_for
    from heartseg.storage import open_store
    from heartseg.studies import GeometryLimits

    frames = {phase: int(m["frame"]) for phase, m in masks.items()}
    limits = GeometryLimits.from_settings(settings)
    source = source_for(source_uri, settings)
    try:
        study = load_study(source, source_uri, cine=False, limits=limits)
        if not set(frames.values()) <= set(study.frame_numbers):  # masks of frames besides ED/ES: the cine
            study = load_study(source, source_uri, cine=True, limits=limits)
    finally:
        source.release(source_uri)
    store = open_store(settings.results_uri, settings.s3_endpoint_url)
    images, labels = {}, {}
    for phase, frame in frames.items():
        if frame not in study.frame_numbers:
            raise ReportError(f"{source_uri}: frame {frame} of the {phase} mask is not in the study")
        uri = str(masks[phase]["uri"])
        images[phase] = study.frame(frame).image
        labels[phase] = read_mask(store.get(uri), uri)
        if labels[phase].shape != images[phase].shape:
            raise ReportError(f"{uri}: mask shape {labels[phase].shape} differs from the image's "
                              f"{images[phase].shape}")
    return StudyImages(images, labels, np.asarray(study.affine, dtype=np.float64), study.spacing)


# --- the display orientation ---


def plane_layout(affine: npt.NDArray[np.float64]) -> tuple[bool, bool, bool]:
    """How :func:`display_plane` shows a slice: (flip voxel axis 0, flip voxel axis 1, axis 0 across).

    Convention (that of a radiological viewer such as ITK-SNAP for an axis-aligned stack): each in-plane
    voxel axis is matched to its nearest world axis by ``nibabel.io_orientation`` (RAS+); the one whose
    world axis comes first in (x, y, z) runs across the screen, the other down. Screen right is the
    patient's left, screen down is posterior (or inferior), so an axis pointing to R, A or S is flipped.
    The slice axis stays the array's third axis (a short-axis stack is never resliced). For ACDC's
    ``diag(-1, -1, 1)`` affine this is ``volume[:, :, z].T`` shown with ``origin="upper"``: nothing flipped.
    """
    import nibabel as nib

    ornt = nib.io_orientation(affine)
    flips, world = [], []
    for axis in (0, 1):
        target, direction = ornt[axis]
        degenerate = bool(np.isnan(target))  # an axis without direction: keep the stored order
        world.append(float(axis) if degenerate else float(target))
        flips.append(not degenerate and direction > 0)
    return flips[0], flips[1], world[0] <= world[1]


def display_plane(volume: npt.NDArray[Any], z: int, affine: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """Slice ``z`` of an ``(x, y, z)`` volume as the 2D array to show with ``imshow(origin="upper")``
    (rows down the screen, columns across), by the convention of :func:`plane_layout`."""
    flip0, flip1, axis0_across = plane_layout(affine)
    plane = volume[:, :, z]
    if flip0:
        plane = plane[::-1, :]
    if flip1:
        plane = plane[:, ::-1]
    return plane.T if axis0_across else plane


# --- the ED/ES montage ---


def _slice_choice(labels: Mapping[str, npt.NDArray[np.uint8]]) -> list[tuple[str, int]]:
    """Basal, mid and apical slice indices: the ends and the middle of the slices where any mask has a label.

    The basal end is the one whose ED (else first phase) LV cavity and myocardium area is larger.
    """
    stacks = list(labels.values())
    depth = stacks[0].shape[2]
    heart = np.flatnonzero(np.any([np.any(s > 0, axis=(0, 1)) for s in stacks], axis=0))
    first, last = (int(heart[0]), int(heart[-1])) if heart.size else (0, depth - 1)
    reference = labels.get(Phase.ED.value, stacks[0])
    lv_area = np.count_nonzero(reference >= Structure.MYO.label, axis=(0, 1))
    base, apex = (last, first) if lv_area[last] > lv_area[first] else (first, last)
    return [("basal", base), ("mid", (first + last) // 2), ("apical", apex)]


def _draw_slice(axes: Axes, image: npt.NDArray[Any], labels: npt.NDArray[np.uint8], z: int,
                view: StudyImages, window: tuple[float, float]) -> None:
    from skimage.measure import find_contours

    picture = display_plane(image, z, view.affine)
    drawn = display_plane(labels, z, view.affine)
    axis0_across = plane_layout(view.affine)[2]
    across, down = (view.spacing[0], view.spacing[1]) if axis0_across else (view.spacing[1], view.spacing[0])
    axes.imshow(picture, cmap="gray", origin="upper", vmin=window[0], vmax=window[1], aspect=down / across,
                interpolation="nearest")
    for structure in STRUCTURES:
        for contour in find_contours((drawn == structure.label).astype(np.float32), 0.5):
            axes.plot(contour[:, 1], contour[:, 0], color=COLOURS[structure], linewidth=1.2)
    axes.set_xticks([])
    axes.set_yticks([])


def montage_figure(path: Path, title: str, view: StudyImages) -> str:
    """ED and ES rows, basal / mid / apical columns, contours of RV, MYO and LV over the image."""
    from matplotlib.lines import Line2D

    phases = [p.value for p in _PHASES if p.value in view.images]
    choice = _slice_choice(view.labels)
    figure = new_figure(7.2, 2.4 * len(phases) + 0.6)
    grid = figure.subplots(len(phases), len(choice), squeeze=False)
    for row, phase in enumerate(phases):
        image = view.images[phase]
        low, high = (float(v) for v in np.percentile(image, (0.5, 99.5)))
        for column, (name, z) in enumerate(choice):
            axes = grid[row][column]
            _draw_slice(axes, image, view.labels[phase], z, view, (low, high if high > low else low + 1.0))
            axes.set_title(f"{phase} {name} (slice {z + 1})", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.legend(handles=[Line2D([], [], color=COLOURS[s], label=s.value) for s in STRUCTURES],
                  loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return save_png(figure, path)


# --- which studies, and drawing them ---


def montage_studies(document: Mapping[str, Any], data: ReportData) -> list[dict[str, Any]]:
    """The studies that get a montage: every flagged study (worst first), then the worst by mean Dice."""
    masks = masks_by_study(data.masks)
    mean_dice = study_mean_dice(data.metric_rows)
    chosen: dict[int, dict[str, Any]] = {}
    for row in document["flags"]:
        chosen[int(row["study_id"])] = {"study_id": int(row["study_id"]), "patient_id": row["patient_id"],
                                        "why": [f"flagged ({row['severity']}): {row['flags']}"]}
    for rank, row in enumerate(document["worst"], start=1):
        entry = chosen.setdefault(int(row["study_id"]), {"study_id": int(row["study_id"]),
                                                         "patient_id": row["patient_id"], "why": []})
        entry["why"].append(f"mean Dice {rank}. lowest of the run")
    for study_id, entry in chosen.items():
        found = masks.get(study_id, {})
        entry["source_uri"] = found.get("source_uri")
        entry["masks"] = found.get("masks", {})
        entry["mean_dice"] = mean_dice.get(study_id, {}).get("mean_dice")
    return list(chosen.values())


def draw_montages(settings: Settings, entries: list[dict[str, Any]], folder: Path) -> None:
    """Draw each entry's montage into ``folder`` (``entry["file"]``), or say why not (``entry["error"]``).

    A storage service (PACS, S3 endpoint) that does not answer for one study is not asked again for the others:
    their montages name its error at once.
    """
    from heartseg.storage import StorageError

    unreachable: dict[tuple[str, str], str] = {}
    for entry in entries:
        if not entry["masks"]:
            entry["error"] = "no ED or ES mask recorded for this study"
            continue
        service = _service_of(str(entry["source_uri"]))
        if service in unreachable:
            entry["error"] = f"not fetched: {unreachable[service]}"
            continue
        try:
            view = load_study_images(settings, str(entry["source_uri"]), entry["masks"])
            entry["file"] = montage_figure(folder / f"montage_study{entry['study_id']}.png",
                                           f"{entry['patient_id']}: predicted contours", view)
        except StorageError as exc:
            entry["error"] = str(exc)
            if service is not None:
                unreachable[service] = str(exc)
        except HeartSegError as exc:
            entry["error"] = str(exc)


def _service_of(source_uri: str) -> tuple[str, str] | None:
    """(scheme, host and port) of a remote source; None for a local path."""
    from urllib.parse import urlsplit

    parts = urlsplit(source_uri)
    return (parts.scheme, parts.netloc) if parts.scheme and parts.netloc else None
