"""What every group of the ``heartseg`` command line shares: the consoles, the progress bar, the command and group
classes (HeartSeg's errors as one red line; flags without a type in ``--help``) and the options several commands take.

Imports neither torch nor nnunetv2, nor Celery: a command imports what it needs inside its function.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer._click import Context as ClickContext  # the click that Typer bundles, whose Context its groups take
from typer._click import Parameter
from typer.core import TyperCommand, TyperGroup, TyperOption

from heartseg.enums import Frames
from heartseg.errors import HeartSegError
from heartseg.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep


def _flags_without_type(params: list[Parameter]) -> list[Parameter]:
    """The parameters, each flag (``--force``, ``--help``) given an empty metavar: Typer 0.29's help shows a flag's
    type, ``--force <bool>``, as if it took a value."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class HeartSegCommand(TyperCommand):
    """A command whose ``--help`` shows flags without a type. Every HeartSeg command is one (``cls=``)."""

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        """The command's parameters, ``--help`` included; flags without a metavar."""
        return _flags_without_type(super().get_params(ctx))


class HeartSegGroup(TyperGroup):
    """The command group that turns HeartSeg's own errors into one red line and exit status 2.

    Bad input and configuration (:class:`HeartSegError`, and ``HEARTSEG_*`` variables the settings
    refuse) are the user's to fix, so they get the message, not a traceback; anything else is a bug
    and keeps its traceback. Its ``--help`` shows flags without a type, as :class:`HeartSegCommand`'s does.
    """

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        """The group's parameters, ``--help`` included; flags without a metavar."""
        return _flags_without_type(super().get_params(ctx))

    def invoke(self, ctx: ClickContext) -> Any:
        """Run the command; report HeartSeg's errors in one line."""
        try:
            return super().invoke(ctx)
        except HeartSegError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from exc
        except ValidationError as exc:
            problems = "; ".join(f"HEARTSEG_{'_'.join(map(str, e['loc'])).upper() or '*'}: {e['msg']}"
                                 for e in exc.errors())
            err_console.print(f"[red]error:[/red] invalid settings: {escape(problems)}", highlight=False)
            raise typer.Exit(2) from exc


def progress_bar() -> Progress:
    """A progress bar on stderr (description, bar, done of total, time left) that disappears when done."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def fast_settings(settings: Settings, model_dir: Path) -> Settings:
    """``--fast`` (as TotalSegmentator's): one fold (the first chosen, else the first present) and no mirroring."""
    from heartseg.models import available_folds

    chosen = settings.folds or list(available_folds(model_dir, settings.checkpoint_name))[:1]
    return settings.model_copy(update={"folds": chosen[:1] or None, "use_mirroring": False})


# The options that several commands take.
RunName = Annotated[str, typer.Argument(help="Run name.")]
ModelOption = Annotated[Path | None, typer.Option("--model", help="nnU-Net model folder (default: shipped).")]
RunOption = Annotated[str | None, typer.Option("--run", help="Run name (default: derived from the source).")]
FramesOption = Annotated[Frames, typer.Option("--frames",
                                              help="The frames to segment: ED and ES, or the whole cine.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Redo studies this model has already done.")]
AddressOption = Annotated[str, typer.Option("--address", help="Interface to listen on.")]


def print_viewer_links(engine: Engine, settings: Settings, run: str, limit: int | None = None) -> None:
    """One line per study of the run in the viewer's PACS, flagged studies first: patient, flagged, viewer URL
    (whole, on one line, to click or copy); at most ``limit`` lines, then how many more; nothing when no study has
    one."""
    from scheduler.viewer.links import ViewerLinks, run_viewer_links

    rows = run_viewer_links(engine, run, ViewerLinks.from_settings(settings))
    if rows:
        console.print(f"{run}: studies in the viewer (heartseg viewer), flagged first", highlight=False)
    for row in rows[:limit]:
        console.print(f"  {row['patient_id']}{' (flagged)' if row['flagged'] else ''}: {row['viewer_url']}",
                      highlight=False, soft_wrap=True)
    if limit is not None and len(rows) > limit:
        console.print(f"  and {len(rows) - limit} more: heartseg report {run} --json FILE lists them all",
                      highlight=False, soft_wrap=True)
