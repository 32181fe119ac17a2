"""Benchmark: seconds and bytes of one DICOM SEG per cardiac phase (highdicom), on the Sunnybrook series.

Run with ``make bench``; writes ``docs/bench-dicom-seg.md`` with the numbers this run measured.
The cost of a SEG does not depend on what its labels are, so every phase gets the same label map
with the three structures (no model run needed).
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heartseg.settings import get_settings
from heartseg.studies.dicom import load_dicom_cine
from workers.dicom_seg import build_seg, encode_seg, read_sources


def labels_for(shape: tuple[int, int, int]) -> np.ndarray:
    """Discs of the three structures on every slice."""
    labels = np.zeros(shape, np.uint8)
    x, y = np.mgrid[: shape[0], : shape[1]]
    labels[np.hypot(x - 128, y - 120) < 28] = 2
    labels[np.hypot(x - 128, y - 120) < 18] = 3
    labels[np.hypot(x - 90, y - 150) < 15] = 1
    return labels


def main(out: Path = Path("docs/bench-dicom-seg.md")) -> None:
    """Build and encode the SEG of every phase; print and write a Markdown report."""
    series = get_settings().shared_data / "sunnybrook" / "SCD0000101"
    study = load_dicom_cine(series)
    assert study.dicom_files is not None
    labels = labels_for(study.shape)
    read_s, build_s, sizes = [], [], []
    for number in study.frame_numbers:
        t0 = time.perf_counter()
        sources = read_sources(study.dicom_files[number])
        t1 = time.perf_counter()
        data = encode_seg(build_seg(labels, sources, fingerprint="0" * 64, frame=number, version="bench"))
        build_s.append(time.perf_counter() - t1)
        read_s.append(t1 - t0)
        sizes.append(len(data))
    report = "\n".join([
        "# DICOM SEG benchmark", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` (`bench/dicom_seg.py`): the Sunnybrook "
        f"series SCD0000101, {len(study.frame_numbers)} phases of {study.shape[2]} slices of "
        f"{study.shape[0]}x{study.shape[1]}, one BINARY SEG per phase with 3 segments "
        f"({3 * study.shape[2]} frames each).", "",
        "| step | mean s/phase | max |", "|---|---|---|",
        f"| read the phase's source images | {statistics.fmean(read_s):.3f} | {max(read_s):.3f} |",
        f"| build and encode the SEG | {statistics.fmean(build_s):.3f} | {max(build_s):.3f} |", "",
        f"SEG size: {statistics.fmean(sizes) / 1024:.0f} KiB per phase (uncompressed BINARY, 1 bit per pixel).",
    ]) + "\n"
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)


if __name__ == "__main__":
    main()
