"""The cohort run: ``submit``, ``status``, ``retry``, ``reconcile``, ``run`` and ``demo``.

``submit`` records a run and enqueues its studies for workers elsewhere; ``run`` and ``demo`` start their own
workers on this host. Imports neither torch nor Celery: each command imports what it needs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from heartseg.enums import Frames, StudyStatus
from heartseg.settings import Settings, get_settings
from scheduler.cli.common import (
    ForceOption,
    FramesOption,
    HeartSegCommand,
    ModelOption,
    RunName,
    RunOption,
    console,
    err_console,
    fast_settings,
    print_viewer_links,
    progress_bar,
)

#: How many viewer links ``status`` prints (flagged studies first); ``report --json`` lists every one.
STATUS_VIEWER_LINKS = 20

app = typer.Typer()

#: How long ``heartseg run`` and ``heartseg demo`` give their workers to start before a queue without one is shown.
STARTING_S = 120.0
#: ``heartseg status`` and ``heartseg run``'s exit status when the record could not be reached.
EXIT_UNREACHABLE = 3


@app.command(cls=HeartSegCommand)
def submit(
    source: Annotated[str, typer.Argument(help="Folder or s3://bucket/prefix of studies (ACDC patient folders, "
                                                "DICOM series folders or NIfTI files), or a PACS: "
                                                "dicomweb://HOST:PORT/dicom-web.")],
    model: ModelOption = None,
    run: RunOption = None,
    frames: FramesOption = Frames.ED_ES,
    force: ForceOption = False,
    study: Annotated[list[str] | None, typer.Option(
        "--study", help="DICOMweb: a StudyInstanceUID to segment (repeatable; default: every study with MR).")] = None,
    series: Annotated[str | None, typer.Option(
        "--series", help="DICOMweb: the cine SeriesInstanceUID (default: the study's MR series with most images).")]
        = None,
) -> None:
    """Record a run of a cohort and enqueue its studies on the gpu queue."""
    _submit(get_settings(), source, model, run, frames, force, studies=study or [], series=series)


def _submit(settings: Settings, source: str, model: Path | None, run: str | None, frames: Frames, force: bool,
            studies: list[str] | None = None, series: str | None = None) -> str:
    """Discover, record and enqueue; returns the run name."""
    from db.session import open_record
    from heartseg.sources import Selection, discover_studies
    from scheduler.submit import submit_sources
    from workers.celery_app import create_app
    from workers.enqueue import enqueue_segmentation

    model_dir = model or settings.model_dir
    name = run or f"{Path(source.rstrip('/')).name}-{frames}"
    discovery = discover_studies(source, settings, Selection(tuple(studies or ()), series))
    engine = open_record(settings.database_url)
    submission = submit_sources(engine, settings, name=name, source_uri=source, sources=discovery.sources,
                                model_dir=model_dir, frames=frames, force=force)
    for entry, reason in [*discovery.skipped, *submission.refused]:
        err_console.print(f"[yellow]skipped[/yellow] {escape(entry)}: {escape(reason)}", highlight=False)
    with progress_bar() as progress:
        task = progress.add_task("enqueueing", total=len(submission.study_ids))
        enqueue_segmentation(create_app(settings), submission.study_ids, on_sent=functools.partial(
            progress.advance, task))
    parts = [f"run {name}: {len(submission.study_ids)} studies enqueued",
             f"{len(submission.skipped)} already done with model {submission.fingerprint[:16]} (use --force to redo)"]
    if submission.in_progress:
        parts.append(f"{submission.in_progress} in progress")
    if submission.failed:
        parts.append(f"{submission.failed} failed earlier (heartseg retry {name} --failed)")
    console.print(", ".join(parts), highlight=False, soft_wrap=True)
    return name


@app.command(cls=HeartSegCommand)
def status(
    run: RunName,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until every study is done or failed.")] = False,
    poll_s: Annotated[float, typer.Option("--poll", help="Seconds between looks at the record.")] = 2.0,
    unreachable_s: Annotated[float, typer.Option(
        "--unreachable-timeout", help="Give up (exit 3) after the record did not answer for this many seconds.")]
        = 600.0,
) -> None:
    """Progress of a run and its live workers, from the record; then the viewer links of its PACS studies.

    Exit 1 if any study failed, 3 if the record could not be reached.
    Nothing needs it to run: the workers heal the record themselves.
    """
    from db.session import open_record
    from scheduler.progress import RecordUnreachableError, follow_run

    try:
        counts = follow_run(get_settings(), run, wait=wait, poll_s=poll_s, console=err_console,
                            unreachable_s=unreachable_s)
    except RecordUnreachableError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE) from exc
    console.print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    settings = get_settings()
    print_viewer_links(open_record(settings.database_url), settings, run, limit=STATUS_VIEWER_LINKS)
    if counts.get(StudyStatus.FAILED):
        raise typer.Exit(1)


@app.command(cls=HeartSegCommand)
def retry(
    run: RunName,
    failed: Annotated[bool, typer.Option("--failed", help="Re-enqueue the run's failed studies.")] = False,
) -> None:
    """Re-enqueue a run's failed studies (after fixing their input)."""
    from db.lifecycle import requeue_failed
    from db.queries import require_run
    from db.session import open_record, session_scope
    from workers.celery_app import create_app
    from workers.enqueue import enqueue_segmentation

    if not failed:
        err_console.print("[red]error:[/red] say what to retry: --failed")
        raise typer.Exit(2)
    settings = get_settings()
    engine = open_record(settings.database_url)
    run_id = require_run(engine, run)
    with session_scope(engine) as session:
        ids = requeue_failed(session, run_id)
    enqueue_segmentation(create_app(settings), ids)
    console.print(f"run {run}: {len(ids)} failed studies enqueued again")


@app.command(cls=HeartSegCommand)
def reconcile(
    loop: Annotated[bool, typer.Option("--loop", help="Run a pass every --every seconds until stopped.")] = False,
    every_s: Annotated[float | None, typer.Option(
        "--every", help="Seconds between passes with --loop [env var: HEARTSEG_RECONCILE_S].")] = None,
) -> None:
    """Heal the record: re-queue the studies of dead workers, resend lost messages.

    Studies out of tries (HEARTSEG_MAX_ATTEMPTS) fail instead of going back to the queue.
    Every worker already does this; run it with --loop where workers may all be gone (one replica).
    """
    import signal
    import socket
    import threading

    from db.session import open_record
    from workers.celery_app import create_app
    from workers.heartbeat import WorkerState, beat
    from workers.reconciler import reconcile_forever, reconcile_once

    settings = get_settings()
    engine, celery = open_record(settings.database_url), create_app(settings)
    if not loop:
        result = reconcile_once(engine, settings, celery)
        console.print(f"re-queued {len(result.requeued)}, failed {len(result.failed)}, segment messages sent "
                      f"{len(result.segment)}, evaluation messages sent {len(result.evaluate)}")
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    err_console.print(f"reconciling every {every_s or settings.reconcile_s:g} s", highlight=False)
    me = WorkerState(name=f"reconciler@{socket.gethostname()}", queue="reconciler")

    def after_pass(error: str | None) -> None:
        me.last_error = error
        beat(engine, me)

    reconcile_forever(engine, settings, celery, stop, every_s, after_pass=after_pass)
    beat(engine, me, stopped=True)


@app.command("run", cls=HeartSegCommand)
def run_command(
    source: Annotated[str, typer.Argument(help="Folder or s3://bucket/prefix of studies.")],
    model: ModelOption = None,
    run: RunOption = None,
    frames: FramesOption = Frames.ED_ES,
    force: ForceOption = False,
    devices: Annotated[str, typer.Option("--devices", help="Segmentation workers: CUDA device numbers (0,1), "
                                                     "'cpu', or 'auto': every GPU of this host, else the CPU.")]
        = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the record, results, logs, cache and broker "
                                      "(HEARTSEG_* settings given explicitly still win).")] = Path("heartseg-run"),
    fast: Annotated[bool, typer.Option("--fast", help="One fold without mirroring: for CPU hosts.")] = False,
    publish: Annotated[str | None, typer.Option(
        "--publish", metavar="DICOMWEB_URL", show_default=False,
        help="Then store each DICOM study's series and SEGs in this PACS by STOW-RS (e.g. a local Orthanc: "
             "dicomweb://127.0.0.1:8042/dicom-web) and print its `heartseg viewer` link.")] = None,
) -> None:
    """Everything on this host in one command: workers, submit, follow, report.

    The workers start first and stop at the end.
    Exit 1 if a study failed or could not be published, 2 if a worker could not start (its reason is shown).
    """
    import signal

    from db.queries import run_report
    from db.session import open_record
    from scheduler.local_run import local_workers, run_folder_settings
    from scheduler.progress import follow_run
    from scheduler.reports import record_tables
    from scheduler.worker_launcher import resolve_devices

    gpu_devices = tuple(resolve_devices(devices))
    out.mkdir(parents=True, exist_ok=True)
    settings = run_folder_settings(get_settings(), out, keep_explicit=True)
    if fast:
        settings = fast_settings(settings, model or settings.model_dir)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # unwinds through local_workers, which stops the workers
    with local_workers(settings, out / "logs", gpu_devices) as workers:
        name = _submit(settings, source, model, run, frames, force)
        counts = follow_run(settings, name, wait=True, poll_s=1.0, console=err_console, check=workers.check,
                            starting_s=STARTING_S)
    for table in record_tables(run_report(open_record(settings.database_url), name), name):
        console.print(table)
    console.print(_run_locations(settings, out), highlight=False, soft_wrap=True)
    unpublished = _publish(settings, name, publish) if publish else 0
    if counts.get(StudyStatus.FAILED) or unpublished:
        raise typer.Exit(1)


def _publish(settings: Settings, run: str, pacs: str) -> int:
    """``run --publish``: store the run's DICOM studies and SEGs in ``pacs``; prints each study's viewer link and
    returns how many could not be published."""
    from db.session import open_record
    from scheduler.viewer.publish import RunSegs, publish_run

    failed: list[RunSegs] = []

    def report_error(study: RunSegs, exc: Exception) -> None:
        failed.append(study)
        err_console.print(f"[red]not published[/red] {escape(study.patient_id)}: {escape(str(exc))}",
                          highlight=False)

    published = publish_run(open_record(settings.database_url), settings, run, pacs, report_error)
    for study in published:
        console.print(f"published {study.patient_id}: {study.n_images} images and {study.n_segs} SEGs to {pacs}; "
                      f"view: {study.viewer_url}", highlight=False, soft_wrap=True)
    if published:
        console.print(f"to look: heartseg viewer --pacs {pacs}", highlight=False, soft_wrap=True)
    elif not failed:
        console.print("nothing to publish: no done study of this run is a local DICOM folder with SEGs",
                      highlight=False)
    return len(failed)


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM stops ``heartseg run`` as Ctrl-C does: its workers are stopped on the way out."""
    err_console.print("stopping: the workers finish or give back their studies", highlight=False)
    raise SystemExit(128 + signum)


def _run_locations(settings: Settings, out: Path) -> str:
    """Where ``heartseg run`` kept the record, the results and the worker logs (no password shown)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    record = url.database if url.drivername.startswith("sqlite") and url.database else url.render_as_string(
        hide_password=True)
    return f"record: {record}\nresults: {settings.results_uri}\nlogs: {(out / 'logs').resolve()}"


@app.command(cls=HeartSegCommand)
def demo(
    out: Annotated[Path, typer.Option("--out", help="Working folder of the demo (record, broker, masks).")] = Path(
        "demo-output"),
    phantoms: Annotated[int, typer.Option("--phantoms", min=1, help="Phantom patients to generate.")] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 2026,
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="Mirroring test-time augmentation.")] = False,
) -> None:
    """The main job with no server: phantoms (and ACDC's validation patients) through real Celery workers."""
    import shutil

    from db.queries import run_report
    from db.session import open_record
    from scheduler.demo import demo_cohorts, demo_reports, demo_settings, phantom_ef_rows
    from scheduler.local_run import local_workers
    from scheduler.progress import follow_run
    from scheduler.reports import record_tables, rows_table

    for stale in ("record.db", "record.db-wal", "record.db-shm"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "broker", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(get_settings(), out, tta)
    cohorts = demo_cohorts(settings, out, phantoms, seed)
    with local_workers(settings, out / "logs") as workers:
        for cohort in cohorts:
            _submit(settings, str(cohort.folder), None, cohort.run, Frames.ED_ES, True)
            follow_run(settings, cohort.run, wait=True, poll_s=1.0, console=err_console, check=workers.check,
                       starting_s=STARTING_S)
    engine = open_record(settings.database_url)
    console.print(f"test-time mirroring {'on' if tta else 'off'}; record: {out / 'record.db'}")
    for cohort in cohorts:
        for table in record_tables(run_report(engine, cohort.run), cohort.run):
            console.print(table)
    console.print(rows_table("demo-phantoms: LV EF (%) from predicted masks, reference masks, analytic truth",
                             phantom_ef_rows(engine, "demo-phantoms")))
    for page in demo_reports(engine, settings, out, [cohort.run for cohort in cohorts]):
        console.print(f"report page: {page.resolve()}", highlight=False, soft_wrap=True)
