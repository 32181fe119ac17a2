"""Start Celery worker processes: one per GPU (pinned), or a CPU pool for the metrics queue.

The parent never imports torch or touches CUDA; each child gets ``CUDA_VISIBLE_DEVICES``
set to its one device in its environment before it starts, so torch inside it sees only
that device (as ``cuda:0``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType


def gpu_worker_commands(devices: Sequence[str], hostname: str | None = None) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of one solo-pool worker per device; ``cpu`` runs inference on the CPU."""
    host = hostname or socket.gethostname()
    commands = []
    for device in devices:
        name = "gpucpu" if device == "cpu" else f"gpu{device}"
        env = {"CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device,
               "HEARTSEG_DEVICE": "cpu" if device == "cpu" else "cuda"}
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--queues", "gpu",
                "--pool", "solo", "--hostname", f"{name}@{host}", "--loglevel", "INFO"]
        commands.append((argv, env))
    return commands


def cpu_worker_command(concurrency: int, hostname: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of the metrics worker."""
    host = hostname or socket.gethostname()
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--queues", "cpu",
            "--concurrency", str(concurrency), "--hostname", f"cpu@{host}", "--loglevel", "INFO"]
    return argv, {"CUDA_VISIBLE_DEVICES": ""}


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
