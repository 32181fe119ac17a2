"""``--devices auto``: every GPU of the host, found without torch, else the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heartseg.errors import ConfigurationError
from scheduler.worker_launcher import resolve_devices


def fake_nvidia_smi(folder: Path, gpus: int) -> str:
    """An ``nvidia-smi`` that lists ``gpus`` GPUs as ``nvidia-smi -L`` does."""
    script = folder / "nvidia-smi"
    lines = "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d})" for i in range(gpus))
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
    script.chmod(0o755)
    return str(script)


def test_auto_takes_every_gpu_nvidia_smi_lists(tmp_path: Path) -> None:
    assert resolve_devices("auto", visible=None, nvidia_smi=fake_nvidia_smi(tmp_path, 2)) == ["0", "1"]


def test_auto_respects_cuda_visible_devices() -> None:
    assert resolve_devices("auto", visible="2,3", nvidia_smi="/nonexistent/nvidia-smi") == ["2", "3"]
    assert resolve_devices("auto", visible="", nvidia_smi="/nonexistent/nvidia-smi") == ["cpu"]


def test_auto_without_a_gpu_is_the_cpu(tmp_path: Path) -> None:
    assert resolve_devices("auto", visible=None, nvidia_smi=str(tmp_path / "missing")) == ["cpu"]
    assert resolve_devices("auto", visible=None, nvidia_smi=fake_nvidia_smi(tmp_path, 0)) == ["cpu"]


def test_explicit_devices_are_kept_and_checked() -> None:
    assert resolve_devices("0, 1") == ["0", "1"]
    assert resolve_devices("cpu") == ["cpu"]
    for bad in ("gpu0", "", ","):
        with pytest.raises(ConfigurationError, match="expected 'auto', 'cpu' or CUDA device numbers"):
            resolve_devices(bad)


def test_a_bad_devices_value_is_one_line_with_status_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "worker", "gpu", "--devices", "gpu0"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr == ("error: --devices 'gpu0': expected 'auto', 'cpu' or CUDA device numbers such as 0,1 "
                             "(not 'gpu0')\n")
