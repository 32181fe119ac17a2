"""Start Celery worker processes: one per GPU (pinned), or a CPU pool for the metrics queue.

The parent never imports torch or touches CUDA; each child gets ``CUDA_VISIBLE_DEVICES``
set to its one device in its environment before it starts, so torch inside it sees only
that device (as ``cuda:0``).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from heartseg.errors import ConfigurationError
from heartseg.extras import require
from workers.monitoring import MULTIPROC_ENV, new_multiprocess_dir, require_prometheus


def resolve_devices(devices: str, visible: str | None = None, nvidia_smi: str = "nvidia-smi") -> list[str]:
    """The segmentation workers' devices from ``--devices``: a comma list of CUDA device numbers, ``cpu``, or
    ``auto``: every GPU of this host (``CUDA_VISIBLE_DEVICES`` when set, else those ``nvidia-smi -L`` lists), or
    ``cpu`` when there is none. Found without torch, so the parent process never touches CUDA.

    Raises
    ------
    ConfigurationError
        For an empty list, or an entry that is neither a device number nor ``cpu``.
    """
    chosen = [d.strip() for d in devices.split(",") if d.strip()]
    if chosen == ["auto"]:
        return _host_gpus(os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible, nvidia_smi) or ["cpu"]
    bad = [d for d in chosen if d != "cpu" and not d.isdigit()]
    if not chosen or bad:
        raise ConfigurationError(f"--devices {devices!r}: expected 'auto', 'cpu' or CUDA device numbers such as "
                                 f"0,1{f' (not {bad[0]!r})' if bad else ''}")
    return chosen


def _host_gpus(visible: str | None, nvidia_smi: str) -> list[str]:
    """The CUDA devices this host offers: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``'s GPUs."""
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        listed = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def gpu_worker_commands(devices: Sequence[str], hostname: str | None = None, metrics_port: int | None = None,
                        studies_in_flight: int = 2) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of one segmentation worker per device; ``cpu`` runs inference on the CPU.

    Each worker is one process with a threads pool of ``studies_in_flight`` threads sharing one loaded
    model: while one study's frames are on the device, the next study (its message reserved by the
    worker) is loaded and preprocessed, and the last one written. With ``metrics_port``, the n-th worker
    serves its metrics on ``metrics_port + n``.

    Raises
    ------
    MissingExtraError
        Without torch and nnunetv2 (the ``[worker]`` extra), or prometheus-client with ``metrics_port``.
    """
    require("a segmentation worker", "worker", "torch", "nnunetv2")
    if metrics_port is not None:
        require_prometheus()
    host = hostname or socket.gethostname()
    commands = []
    for index, device in enumerate(devices):
        name = "gpucpu" if device == "cpu" else f"gpu{device}"
        env = {"CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device,
               "HEARTSEG_DEVICE": "cpu" if device == "cpu" else "cuda"}
        if metrics_port is not None:
            env["HEARTSEG_METRICS_PORT"] = str(metrics_port + index)
            env[MULTIPROC_ENV] = new_multiprocess_dir(name)
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--queues", "gpu",
                "--pool", "threads", "--concurrency", str(studies_in_flight), "--hostname", f"{name}@{host}",
                "--loglevel", "INFO"]
        commands.append((argv, env))
    return commands


def cpu_worker_command(concurrency: int, hostname: str | None = None,
                       metrics_port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of the metrics worker (:class:`MissingExtraError` for ``metrics_port`` without
    prometheus-client)."""
    if metrics_port is not None:
        require_prometheus()
    host = hostname or socket.gethostname()
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--queues", "cpu",
            "--concurrency", str(concurrency), "--hostname", f"cpu@{host}", "--loglevel", "INFO"]
    env = {"CUDA_VISIBLE_DEVICES": ""}
    if metrics_port is not None:
        env[MULTIPROC_ENV] = new_multiprocess_dir("cpu")
    return argv, env


def run_workers(commands: Sequence[tuple[list[str], dict[str, str]]]) -> int:
    """Start the workers, forward SIGTERM/SIGINT to them (each finishes or gives back its study), wait."""
    children = [subprocess.Popen(argv, env={**os.environ, **env}) for argv, env in commands]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def flower_command(address: str, port: int) -> list[str]:
    """argv of Flower on the HeartSeg Celery app (Flower reads ``FLOWER_*`` variables, basic auth included);
    :class:`MissingExtraError` without Flower (the ``[monitoring]`` extra)."""
    require("heartseg flower", "monitoring", "flower")
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower", f"--address={address}",
            f"--port={port}"]


def check_flower_auth(address: str, basic_auth: str | None) -> None:
    """Refuse (:class:`ConfigurationError`) to serve Flower off the loopback interface without ``FLOWER_BASIC_AUTH``
    (``user:password[,...]``)."""
    if basic_auth:
        for pair in basic_auth.split(","):
            user, _, password = pair.partition(":")
            if not user or not password:
                raise ConfigurationError("FLOWER_BASIC_AUTH must be user:password (comma-separated for several users)")
        return
    try:
        loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(f"Flower on {address or 'every interface'} needs FLOWER_BASIC_AUTH=user:password; "
                         "without it, Flower only listens on 127.0.0.1")
