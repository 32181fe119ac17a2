"""The ``heartseg`` command line: :data:`app` and its console-script entry point :func:`main`.

One module per group of commands, each with its own unnamed Typer whose commands ``app`` takes in:

- :mod:`scheduler.cli.cohort`: the cohort run (``submit``, ``status``, ``retry``, ``reconcile``, ``run``, ``demo``);
- :mod:`scheduler.cli.record`: the record (``report``, ``export``, ``db``);
- :mod:`scheduler.cli.tools`: the data tools (``predict``, ``evaluate``, ``convert``, ``phantom``,
  ``reference-indices``);
- :mod:`scheduler.cli.services`: the services (``worker``, ``flower``, ``viewer``);
- :mod:`scheduler.cli.common`: what they share (consoles, progress bar, command classes, common options).

Imports neither torch nor nnunetv2 (checked by a test), so every command starts fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from heartseg.settings import Settings, get_settings
from scheduler.cli import cohort, record, services, tools
from scheduler.cli.common import HeartSegGroup, console

__all__ = ["app", "main"]

app = typer.Typer(cls=HeartSegGroup, help="HeartSeg: bulk nnU-Net v2 segmentation of cardiac cine MRI cohorts.",
                  no_args_is_help=True)
for group in (cohort, record, tools, services):
    app.add_typer(group.app)


def _shipped_model_fingerprint() -> str:
    """The first 16 hex digits of the shipped model's fingerprint as the record shows it with the default
    settings (every fold, the default checkpoint, postprocessing when the folder has its rules), and its folds
    (``1b8350e2ffc316c6 folds 0,1,2,3,4``), without torch."""
    from heartseg.models import POSTPROCESSING_FILE, ModelError, available_folds, model_fingerprint

    defaults = Settings.model_fields
    model_dir: Path = defaults["model_dir"].default
    checkpoint = defaults["checkpoint_name"].default
    postprocessing = bool(defaults["postprocessing"].default) and (model_dir / POSTPROCESSING_FILE).is_file()
    try:
        fingerprint = model_fingerprint(model_dir, None, checkpoint, postprocessing=postprocessing)[:16]
    except ModelError as exc:
        return f"unavailable ({exc})"
    return f"{fingerprint} folds {','.join(available_folds(model_dir, checkpoint))}"


def _show_version(value: bool) -> None:
    """``--version``: the package version, the shipped model's fingerprint and folds, then exit 0."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("heartseg")
    except PackageNotFoundError:
        package_version = "unknown (not installed)"
    console.print(f"heartseg {package_version} model {_shipped_model_fingerprint()}", highlight=False,
                  soft_wrap=True)
    raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    _version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                           help="Print the version and the shipped model's fingerprint, "
                                                "then exit.")] = False,
) -> None:
    from heartseg.logs import configure_logging

    configure_logging(get_settings().log_format, logging.DEBUG if verbose else logging.WARNING)


def main() -> None:
    """Console-script entry point."""
    app()
