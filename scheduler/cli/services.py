"""The services a deployment starts: ``worker gpu``, ``worker cpu``, ``flower`` and ``viewer``.

Each runs until stopped; the workers are Celery processes started by :mod:`scheduler.worker_launcher`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from heartseg.settings import get_settings
from scheduler.cli.common import AddressOption, HeartSegCommand, HeartSegGroup, console

app = typer.Typer()
worker_app = typer.Typer(cls=HeartSegGroup, help="Start Celery workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")


@worker_app.command("gpu", cls=HeartSegCommand)
def worker_gpu(
    devices: Annotated[str, typer.Option("--devices", help="CUDA device numbers (0,1), 'cpu', or 'auto': every "
                                                     "GPU of this host, else the CPU.")] = "auto",
) -> None:
    """One segmentation worker process per device (pinned with CUDA_VISIBLE_DEVICES).

    Each holds HEARTSEG_STUDIES_IN_FLIGHT studies at once on threads that share its model.
    """
    from scheduler.worker_launcher import gpu_worker_commands, resolve_devices, run_workers

    devices_list = resolve_devices(devices)
    settings = get_settings()
    raise typer.Exit(run_workers(gpu_worker_commands(devices_list, metrics_port=settings.metrics_port,
                                                     studies_in_flight=settings.studies_in_flight)))


@worker_app.command("cpu", cls=HeartSegCommand)
def worker_cpu(concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 2) -> None:
    """The metrics and cardiac-indices worker."""
    from scheduler.worker_launcher import cpu_worker_command, run_workers

    raise typer.Exit(run_workers([cpu_worker_command(concurrency, metrics_port=get_settings().metrics_port)]))


@app.command(cls=HeartSegCommand)
def flower(
    address: AddressOption = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5555,
) -> None:
    """Flower on the HeartSeg Celery app.

    Basic auth from FLOWER_BASIC_AUTH (required off loopback).
    """
    import os

    from scheduler.worker_launcher import check_flower_auth, flower_command

    check_flower_auth(address, os.environ.get("FLOWER_BASIC_AUTH"))
    argv = flower_command(address, port)
    os.execv(argv[0], argv)


@app.command(cls=HeartSegCommand)
def viewer(
    address: AddressOption = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 3000,
    pacs: Annotated[str | None, typer.Option(
        "--pacs", show_default=False,
        help="The PACS to show, dicomweb://HOST:PORT/PATH [env var: HEARTSEG_DICOMWEB_URL].")] = None,
) -> None:
    """OHIF's viewer of the PACS, with HeartSeg's SEGs over the images.

    A same-origin proxy adds HEARTSEG_DICOMWEB_AUTH; basic auth from HEARTSEG_VIEWER_AUTH (required off loopback).
    """
    from heartseg.extras import require

    require("heartseg viewer", "viewer", "tornado")
    from scheduler.viewer.dist import OHIF_VERSION
    from scheduler.viewer.server import ViewerOptions, serve

    options = ViewerOptions.from_settings(get_settings(), address, pacs)
    console.print(f"OHIF {OHIF_VERSION} on http://{address}:{port}/ showing {options.pacs_url}"
                  f"{'' if options.login else ' (no login: loopback only)'}", highlight=False, soft_wrap=True)
    serve(options, address, port)
