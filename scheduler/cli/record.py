"""The record: ``report``, ``export`` and ``db upgrade``.

Each command opens the record at ``HEARTSEG_DATABASE_URL`` (migrating an embedded one) and reads or migrates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heartseg.settings import get_settings
from scheduler.cli.common import HeartSegCommand, HeartSegGroup, RunName, console, print_viewer_links

app = typer.Typer()
db_app = typer.Typer(cls=HeartSegGroup, help="The record: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command(cls=HeartSegCommand)
def report(
    run: RunName,
    html: Annotated[Path | None, typer.Option("--html", help="Write a static page here (DIR/index.html, PNGs).",
                                              file_okay=False)] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the machine-readable summary here.",
                                                   dir_okay=False)] = None,
    worst: Annotated[int, typer.Option("--worst", min=0, help="Montages of the N studies with the lowest mean "
                                                              "Dice (besides every flagged study).")] = 5,
) -> None:
    """A run's statistics: status, Dice/HD95 by group, index agreement, failures.

    With --html or --json, writes the report page and/or the JSON summary instead of printing the tables.
    """
    from db.queries import run_report
    from db.session import open_record
    from scheduler.reports import record_tables

    settings = get_settings()
    engine = open_record(settings.database_url)
    if html is None and json_file is None:
        for table in record_tables(run_report(engine, run), run):
            console.print(table)
        print_viewer_links(engine, settings, run)
        return
    from scheduler.report_page import write_report

    for path in write_report(engine, settings, run, html=html, json_path=json_file, worst_n=worst):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command(cls=HeartSegCommand)
def export(
    run: RunName,
    metrics: Annotated[Path | None, typer.Option("--metrics", help="CSV of per-frame, per-structure metrics.")] = None,
    indices: Annotated[Path | None, typer.Option("--indices", help="CSV of cardiac indices (pred and ref).")] = None,
    wide: Annotated[Path | None, typer.Option("--wide", help="CSV with one row per study: indices (pred and ref), "
                                                             "Dice per structure and phase, QC flags, error.",
                                              dir_okay=False)] = None,
) -> None:
    """Write a run's long tables as CSV, and/or its wide table (one row per study)."""
    from db.queries import export_run, export_wide
    from db.session import open_record

    engine = open_record(get_settings().database_url)
    n_metrics, n_indices = export_run(engine, run, metrics, indices)
    if wide is not None:
        console.print(f"wrote {export_wide(engine, run, wide)} study rows to {wide}", highlight=False,
                      soft_wrap=True)
    if metrics is not None or indices is not None or wide is None:
        console.print(f"wrote {n_metrics} metric rows and {n_indices} index rows")


@db_app.command("upgrade", cls=HeartSegCommand)
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the record at HEARTSEG_DATABASE_URL to this HeartSeg's schema (back it up first).

    The commands only create the schema in an empty database; a PostgreSQL record at an older revision needs this.
    """
    from db.migrate import record_revision, upgrade
    from db.session import make_engine

    engine = make_engine(get_settings().database_url)
    before = record_revision(engine)
    upgrade(engine, revision)
    after = record_revision(engine)
    change = f"from {before or 'empty'} to {after}" if before != after else f"already at {after}"
    console.print(f"record at {engine.url.render_as_string(hide_password=True)}: {change}", highlight=False,
                  soft_wrap=True)
