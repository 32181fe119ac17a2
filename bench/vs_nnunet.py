"""HeartSeg against ``nnUNetv2_predict_from_modelfolder``, side by side, on this machine's CPU.

The same shipped model and the 40 frames (ED and ES) of the 20 ACDC validation patients, TTA on and off:

- (a) ``nnUNetv2_predict_from_modelfolder`` with its defaults, the whole process;
- (b) ``heartseg predict`` with nnU-Net's predictor (``HEARTSEG_PREDICTOR=nnunet``);
- (c) ``heartseg predict`` with the batched predictor (the default);
- (d) the same frames as a cohort through ``heartseg run`` (embedded record and broker, real Celery workers:
  queue, record, masks, metrics and indices).

Each is timed as a whole command (start-up and model loading included), rounds alternating a b c d a b c d
..., the median of the rounds reported, with the peak resident memory of the command's process tree
(sampled every 0.25 s) and the voxels of its masks that differ from (a)'s. Writes
``docs/bench-vs-nnunet.md``. Run by ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nibabel as nib
import numpy as np

from heartseg.settings import Settings
from workers.training.split import VALIDATION_PATIENTS

BIN = Path(sys.executable).parent
COMMANDS = {"a": "nnUNetv2_predict_from_modelfolder (defaults)", "b": "heartseg predict, nnU-Net's predictor",
            "c": "heartseg predict, batched predictor", "d": "heartseg run (cohort: queue, record, metrics)"}


@dataclass
class Timing:
    """One command's runs."""

    wall_s: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    differing: int = 0
    voxels: int = 0


def tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


def timed_command(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak MiB of the process tree) of one command, which must succeed."""
    peak = 0.0
    started = time.perf_counter()
    with subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.25):
                peak = max(peak, tree_rss_mib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, stderr = proc.communicate()
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return wall, peak


def prepare(acdc: Path, work: Path) -> tuple[Path, Path]:
    """An nnU-Net input folder of the 40 frames (``case_0000.nii.gz``) and a cohort folder of the 20 patients."""
    images, cohort = work / "images", work / "cohort"
    images.mkdir()
    cohort.mkdir()
    for patient in VALIDATION_PATIENTS:
        info = dict(line.split(":", 1) for line in (acdc / patient / "Info.cfg").read_text().splitlines()
                    if ":" in line)
        for phase in ("ED", "ES"):
            case = f"{patient}_frame{int(info[phase]):02d}"
            os.symlink(acdc / patient / f"{case}.nii.gz", images / f"{case}_0000.nii.gz")
        os.symlink(acdc / patient, cohort / patient)
    return images, cohort


def masks_of(folder: Path) -> dict[str, np.ndarray]:
    """``patientNNN_frameXX`` -> labels, for every mask under ``folder``."""
    found = {}
    for path in folder.rglob("patient*_frame*.nii.gz"):
        found[path.name.removesuffix(".nii.gz")] = np.asarray(nib.load(path).dataobj)
    return found


def command(kind: str, images: Path, cohort: Path, out: Path, model: Path, tta: bool) -> list[str]:
    """argv of one of the four commands."""
    if kind == "a":
        argv = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(images), "-o", str(out), "-m", str(model),
                "-f", "0", "-device", "cpu", "--disable_progress_bar"]
        return argv + ([] if tta else ["--disable_tta"])
    if kind in ("b", "c"):
        return [str(BIN / "heartseg"), "predict", str(images), str(out)] + ([] if tta else ["--no-tta"])
    return [str(BIN / "heartseg"), "run", str(cohort), "--run", "bench"]


def environment(kind: str, tta: bool, shared: Path) -> dict[str, str]:
    """The commands' environment: HeartSeg's defaults, the predictor and TTA chosen, the shared data named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    env.update({"HEARTSEG_SHARED_DATA": str(shared), "HEARTSEG_DEVICE": "cpu",
                "HEARTSEG_USE_MIRRORING": "true" if tta else "false",
                "HEARTSEG_PREDICTOR": "nnunet" if kind == "b" else "batched"})
    return env


def measure(tta: bool, rounds: int, kinds: Sequence[str], settings: Settings) -> dict[str, Timing]:
    """Run the commands in alternating rounds; compare every mask with (a)'s."""
    timings = {k: Timing() for k in kinds}
    with tempfile.TemporaryDirectory(prefix="heartseg-bench-") as scratch:
        images, cohort = prepare(settings.acdc_training_dir.resolve(), Path(scratch))
        reference: dict[str, np.ndarray] = {}
        for round_number in range(rounds):
            for kind in kinds:
                work = Path(scratch) / f"{kind}{round_number}"
                work.mkdir()
                argv = command(kind, images, cohort, work / "out", settings.model_dir, tta)
                wall, peak = timed_command(argv, environment(kind, tta, settings.shared_data.resolve()), work)
                timings[kind].wall_s.append(wall)
                timings[kind].peak_mib.append(peak)
                print(f"TTA {'on' if tta else 'off'} round {round_number + 1} ({kind}) {wall:.1f} s {peak:.0f} MiB",
                      flush=True)
                if round_number == 0:
                    masks = masks_of(work)
                    if kind == kinds[0]:
                        reference = masks
                    if sorted(masks) != sorted(reference):
                        raise RuntimeError(f"({kind}) wrote {len(masks)} masks, (a) {len(reference)}")
                    timings[kind].differing = sum(int((masks[c] != reference[c]).sum()) for c in masks)
                    timings[kind].voxels = sum(m.size for m in masks.values())
                shutil.rmtree(work)
    return timings


def render(results: dict[bool, dict[str, Timing]], rounds: int) -> str:
    """The Markdown report."""
    import torch

    lines = [
        "# HeartSeg and nnUNetv2_predict side by side (CPU)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` (`python -m bench.vs_nnunet`) on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, nnunetv2 2.8.1; no GPU.",
        f"Data: the ED and ES frames of the {len(VALIDATION_PATIENTS)} ACDC validation patients "
        f"({2 * len(VALIDATION_PATIENTS)} frames), shipped model. Each command is timed whole (start-up, model "
        f"loading, reading and writing included), in {rounds} alternating rounds (a b c d, a b c d, ...); "
        "the table gives the median wall time, and the peak resident memory of the command's process tree "
        "(its workers included). Differing voxels: against (a)'s masks, first round.",
        "",
        "Commands (`IN` holds `patientNNN_frameXX_0000.nii.gz` links to the shared files, `COHORT` links to "
        "the 20 patient folders):",
        "",
        "- (a) `nnUNetv2_predict_from_modelfolder -i IN -o OUT -m MODEL -f 0 -device cpu [--disable_tta]`",
        "- (b) `HEARTSEG_PREDICTOR=nnunet heartseg predict IN OUT [--no-tta]`",
        "- (c) `heartseg predict IN OUT [--no-tta]`",
        "- (d) `heartseg run COHORT --run bench` (`HEARTSEG_USE_MIRRORING=false` for TTA off)",
        "",
        "| TTA | command | median wall s | frames/s | x (a) | peak RSS MiB | differing voxels |",
        "|---|---|---|---|---|---|---|",
    ]
    for tta, timings in results.items():
        base = statistics.median(timings["a"].wall_s)
        for kind, timing in timings.items():
            wall = statistics.median(timing.wall_s)
            frames = 2 * len(VALIDATION_PATIENTS)
            lines.append(f"| {'on' if tta else 'off'} | ({kind}) {COMMANDS[kind]} | {wall:.1f} | {frames / wall:.3f} | "
                         f"{base / wall:.2f} | {max(timing.peak_mib):.0f} | {timing.differing} of {timing.voxels} |")
    lines += ["", "Every run's wall seconds, in order:", ""]
    for tta, timings in results.items():
        for kind, timing in timings.items():
            lines.append(f"- TTA {'on' if tta else 'off'} ({kind}): " + ", ".join(f"{w:.1f}" for w in timing.wall_s))
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure with TTA on and off; print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/bench-vs-nnunet.md"))
    parser.add_argument("--tta", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    settings = Settings()
    if not settings.acdc_training_dir.is_dir():
        raise SystemExit(f"ACDC data not found under {settings.acdc_training_dir} (HEARTSEG_SHARED_DATA)")
    choices = {"on": [True], "off": [False], "both": [False, True]}[args.tta]
    results = {tta: measure(tta, args.rounds, list(COMMANDS), settings) for tta in choices}
    report = render(results, args.rounds)
    print(report)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
