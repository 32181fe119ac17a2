"""HeartSeg as a user installs it: the wheel built from this checkout, in a fresh virtual environment, run
outside the checkout (no PYTHONPATH to it, another working folder).

One environment, grown in two steps so the core's packages are installed once: first the core alone
(``pip install heartseg``: no torch; ``--version`` with the model carried in the wheel, ``phantom``,
``evaluate``, and the one-line errors that name the extra of each optional feature), then the
``[worker]`` extra added to it, torch first as the Makefile does (kept by requirements/constraints.txt),
to segment a phantom with the shipped model. About two minutes, most of it pip and the first import of torch.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pytest

from heartseg.models import POSTPROCESSING_FILE, available_folds, model_fingerprint
from heartseg.settings import SHIPPED_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
#: What the wheel is built from (what .dockerignore lets through, plus the model).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "heartseg", "workers", "scheduler", "db", "models")
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
PHANTOM = "phantom001"
#: The phantom's ED frame cut around its heart (voxels x, y, slices): one network tile per slice, so the CPU
#: segments it in seconds.
CROP = (slice(24, 124), slice(40, 140), slice(3, 6))


def _env(venv: Path | None = None) -> dict[str, str]:
    """The environment without anything that points into the checkout or changes HeartSeg's defaults; Python
    may write bytecode (each command then compiles what it imports once, not at every start)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV"} and not k.startswith("HEARTSEG_")}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _expected_version_line() -> str:
    """``heartseg --version`` of this checkout: the package version and the shipped model's fingerprint."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    postprocessing = (SHIPPED_MODEL_DIR / POSTPROCESSING_FILE).is_file()
    fingerprint = model_fingerprint(SHIPPED_MODEL_DIR, postprocessing=postprocessing)[:16]
    return f"heartseg {version} model {fingerprint} folds {','.join(available_folds(SHIPPED_MODEL_DIR))}"


@dataclass
class Installed:
    """A virtual environment holding the wheel, and a working folder outside the checkout."""

    venv: Path
    wheel: Path
    work: Path
    worker: bool = False

    def pip_install(self, *requirements: str) -> None:
        """This checkout's pip installing into the environment (which has none of its own), without compiling
        every module up front."""
        command = [sys.executable, "-m", "pip", "--python", str(self.venv / "bin" / "python"), "install", "--quiet",
                   "--no-compile", *requirements]
        result = subprocess.run(command, cwd=self.work, env=_env(), capture_output=True, text=True, timeout=900,
                                check=False)
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"

    def heartseg(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The installed ``heartseg`` command, run in the working folder."""
        return subprocess.run([str(self.venv / "bin" / "heartseg"), *args], cwd=self.work, env=_env(self.venv),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def python(self, code: str) -> str:
        """Run ``code`` with the environment's Python; its standard output."""
        result = subprocess.run([str(self.venv / "bin" / "python"), "-c", code], cwd=self.work, env=_env(self.venv),
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel built from a copy of the sources, installed without extras into a new environment; a phantom
    written by it, and its ED frame and reference cut around the heart (``in/case_0000.nii.gz``,
    ``ref/case.nii.gz``). Removed afterwards (the environment with torch is 1.7 GB)."""
    tmp = tmp_path_factory.mktemp("install")
    try:
        yield _install_core(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install_core(tmp: Path) -> Installed:
    source = tmp / "source"  # a copy: building in the checkout would leave build/ and stale files there
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                            str(tmp / "dist"), str(source)], cwd=tmp, env=_env(), capture_output=True, text=True,
                           timeout=600, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("heartseg-*.whl")

    venv, work = tmp / "venv", tmp / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=_env(), check=True, timeout=120)
    installed = Installed(venv, wheel, work)
    installed.pip_install(str(wheel))

    result = installed.heartseg("phantom", "cohort", "--patients", "1")
    assert result.returncode == 0, result.stderr
    patient = work / "cohort" / PHANTOM
    for name, folder, target in ((f"{PHANTOM}_frame01.nii.gz", "in", "case_0000.nii.gz"),
                                 (f"{PHANTOM}_frame01_gt.nii.gz", "ref", "case.nii.gz")):
        (work / folder).mkdir()
        image = nib.load(patient / name)
        nib.save(image.slicer[CROP], work / folder / target)
    return installed


def test_core_install_runs_outside_the_checkout_without_torch(installed: Installed) -> None:
    assert not installed.worker, "must run before test_worker_install_*, which adds [worker] to the same environment"
    version = installed.heartseg("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == _expected_version_line()

    where = installed.python(
        "import importlib.util as u, heartseg, heartseg.settings as s\n"
        "print(heartseg.__file__); print(s.SHIPPED_MODEL_DIR)\n"
        "print(*(m for m in ('torch', 'nnunetv2', 'highdicom', 'boto3', 'dicomweb_client', 'flower',"
        " 'prometheus_client') if u.find_spec(m)))\n").splitlines()
    assert all(Path(path).is_relative_to(installed.venv) for path in where[:2]), where  # the wheel's, not ours
    assert where[2] == "", f"the core installs optional packages: {where[2]}"

    evaluated = installed.heartseg("evaluate", "ref", "ref", "--csv", "same.csv")
    assert evaluated.returncode == 0, evaluated.stderr
    assert {row["dice"] for row in csv.DictReader((installed.work / "same.csv").open())} == {"1.0"}

    refused = installed.heartseg("predict", "in", "out")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: segmentation needs torch and nnunetv2: pip install 'heartseg[worker]'"
    assert not (installed.work / "out").exists()

    messages = installed.python(
        "from heartseg.extras import MissingExtraError\n"
        "from heartseg.storage import open_store\n"
        "from heartseg.sources.dicomweb import make_client\n"
        "from scheduler.worker_launcher import cpu_worker_command, flower_command\n"
        "from workers import monitoring\n"
        "for use in (lambda: open_store('s3://bucket/prefix'), lambda: make_client('http://pacs'),\n"
        "            lambda: flower_command('127.0.0.1', 5555), lambda: cpu_worker_command(1, metrics_port=9808)):\n"
        "    try:\n"
        "        use()\n"
        "    except MissingExtraError as exc:\n"
        "        print(exc)\n"
        "monitoring.count_study('run', 'done')  # metrics off, not an error\n").splitlines()
    assert messages == [
        "s3:// storage needs boto3: pip install 'heartseg[s3]'",
        "a dicomweb:// source needs dicomweb-client: pip install 'heartseg[pacs]'",
        "heartseg flower needs flower: pip install 'heartseg[monitoring]'",
        "HEARTSEG_METRICS_PORT (the workers' Prometheus endpoint) needs prometheus-client: "
        "pip install 'heartseg[monitoring]'",
    ]


def test_worker_install_segments_with_the_shipped_model(installed: Installed) -> None:
    torch_pin = next(line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("torch=="))
    installed.pip_install(torch_pin)
    installed.worker = True
    installed.pip_install("-c", str(CONSTRAINTS), f"{installed.wheel}[worker]")

    predicted = installed.heartseg("predict", "in", "out", "--device", "cpu", "--no-tta", timeout=600)
    assert predicted.returncode == 0, predicted.stderr
    fingerprint = _expected_version_line().split()[3]
    assert f"segmented 1 of 1 images into out (model {fingerprint[:12]})" in predicted.stdout, predicted.stdout
    assert (installed.work / "out" / "case.nii.gz").is_file()

    evaluated = installed.heartseg("evaluate", "out", "ref", "--csv", "predicted.csv")
    assert evaluated.returncode == 0, evaluated.stderr
    dice = {row["structure"]: float(row["dice"]) for row in csv.DictReader((installed.work / "predicted.csv").open())}
    assert set(dice) == {"RV", "MYO", "LV"} and min(dice.values()) > 0.9, dice  # 0.98-1.0 with the shipped model
