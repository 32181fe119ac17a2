"""Pack ACDC ED/ES frames for a machine that has no copy of the shared data, and read them back there.

A frame travels as its voxels (int16, exactly the stored values: every ACDC image is int16, uint8 or
integer-valued float32) compressed with xz, with its spacing and patient in an index. Used by the GPU
benchmark (``bench/gpu.sh``), whose machine receives only the repository and carried folders.

    python -m bench.gpu_frames pack OUT_DIR --patients 1-50
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX = "frames.json"


@dataclass(frozen=True)
class PackedFrame:
    """One frame read back: which patient and frame, its voxels in (x, y, z) order and spacing in mm."""

    patient: str
    frame: int
    phase: str
    image: np.ndarray
    spacing: tuple[float, float, float]


def pack(acdc_root: Path, out: Path, patients: list[str]) -> int:
    """Write the ED and ES frames of ``patients`` to ``out``; returns the number of frames."""
    from heartseg.studies.acdc import load_acdc_patient

    out.mkdir(parents=True, exist_ok=True)
    index = []
    for patient in patients:
        study = load_acdc_patient(acdc_root / patient, cine=False)
        for frame in study.frames:
            voxels = np.asarray(frame.image)
            exact = voxels.astype(np.int16)
            if not np.array_equal(exact, voxels):
                raise ValueError(f"{patient} frame {frame.number}: voxels are not int16 values")
            buffer = io.BytesIO()
            np.save(buffer, exact, allow_pickle=False)
            name = f"{patient}_frame{frame.number:02d}.npy.xz"
            (out / name).write_bytes(lzma.compress(buffer.getvalue(), preset=9))
            index.append({"patient": patient, "frame": frame.number, "phase": "ED" if frame.number == study.ed
                          else "ES", "file": name, "spacing": [float(s) for s in study.spacing]})
    (out / INDEX).write_text(json.dumps(index, indent=1))
    return len(index)


def read(folder: Path) -> Iterator[PackedFrame]:
    """The frames packed in ``folder``, in the order they were packed."""
    for entry in json.loads((folder / INDEX).read_text()):
        image = np.load(io.BytesIO(lzma.decompress((folder / entry["file"]).read_bytes())), allow_pickle=False)
        yield PackedFrame(entry["patient"], entry["frame"], entry["phase"], image,
                          tuple(entry["spacing"]))  # type: ignore[arg-type]


def _patients(spec: str) -> list[str]:
    first, _, last = spec.partition("-")
    return [f"patient{n:03d}" for n in range(int(first), int(last or first) + 1)]


def main() -> None:
    """Command line: ``pack OUT_DIR --patients A-B``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["pack"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", default="1-100", help="range of patient numbers, e.g. 1-50")
    parser.add_argument("--acdc", type=Path, default=None, help="ACDC training folder (default: the settings')")
    args = parser.parse_args()
    from heartseg.settings import Settings

    root = args.acdc or Settings().acdc_training_dir
    print(f"packed {pack(root, args.out, _patients(args.patients))} frames into {args.out}")


if __name__ == "__main__":
    main()
