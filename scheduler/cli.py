"""The ``heartseg`` command line.

Imports neither torch nor nnunetv2 (checked by a test), so every command starts fast.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer._click import Context as ClickContext  # the click that Typer bundles, whose Context its groups take
from typer.core import TyperGroup

from heartseg.enums import Frames, StudyStatus
from heartseg.errors import HeartSegError
from heartseg.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep


class HeartSegGroup(TyperGroup):
    """The command group that turns HeartSeg's own errors into one red line and exit status 2.

    Bad input and configuration (:class:`HeartSegError`, and ``HEARTSEG_*`` variables the settings
    refuse) are the user's to fix, so they get the message, not a traceback; anything else is a bug
    and keeps its traceback.
    """

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


app = typer.Typer(cls=HeartSegGroup, help="HeartSeg: bulk nnU-Net v2 segmentation of cardiac cine MRI cohorts.",
                  no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


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


@app.command()
def evaluate(
    pred_arg: Annotated[Path | None, typer.Argument(metavar="PRED", help="Folder of predicted label maps (NIfTI).",
                                                    show_default=False)] = None,
    ref_arg: Annotated[Path | None, typer.Argument(metavar="REF", help="Folder of reference label maps, matched "
                                                   "by file name.", show_default=False)] = None,
    pred_opt: Annotated[Path | None, typer.Option("--pred", help="Folder of predicted label maps (instead of PRED).",
                                                  show_default=False)] = None,
    ref_opt: Annotated[Path | None, typer.Option("--ref", help="Folder of reference label maps (instead of REF).",
                                                 show_default=False)] = None,
    labels: Annotated[str, typer.Option("--labels", help="How both folders number the structures, e.g. "
                                        "LV=1,MYO=2,RV=3 (ukbb_cardiac, M&Ms); other values are an error.")]
    = "RV=1,MYO=2,LV=3",
    csv: Annotated[Path | None, typer.Option("--csv", help="Write one row per case and structure here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write nnU-Net's summary.json here (metric_per_case, "
                                                  "mean, foreground_mean; keyed by label value in --labels); NaN and "
                                                  "infinite values are null (nnU-Net writes NaN, not valid JSON).",
                                                  show_default=False)] = None,
) -> None:
    """Compare two folders of label maps: Dice, IoU, TP/FP/FN, HD95, ASSD, volumes.

    Give the folders as PRED REF or as --pred PRED --ref REF.

    Exits with status 1 when any case could not be evaluated (listed at the end).
    """
    from heartseg.labels import parse_label_numbering
    from scheduler.reports import structure_table
    from workers.evaluation import (
        evaluate_folders,
        list_label_maps,
        resolve_folders,
        summarize,
        write_csv,
        write_summary_json,
    )

    pred, ref = resolve_folders(pred_arg, ref_arg, pred_opt, ref_opt)
    numbering = parse_label_numbering(labels)
    n_cases = len(set(list_label_maps(pred)) | set(list_label_maps(ref)))
    with _progress() as progress:
        task = progress.add_task("evaluating", total=n_cases)
        results = []
        for result in evaluate_folders(pred, ref, numbering=numbering):
            results.append(result)
            progress.advance(task)
    if csv is not None:
        write_csv(results, csv)
    if json_out is not None:
        write_summary_json(results, json_out, numbering)
    console.print(structure_table(summarize(results), f"{pred} vs {ref}"))
    errors = [r for r in results if r.error]
    for result in errors:
        err_console.print(f"[red]error[/red] {escape(result.case)}: {escape(str(result.error))}", highlight=False)
    if errors:
        raise typer.Exit(1)


@app.command("reference-indices")
def reference_indices_command(
    source: Annotated[Path | None, typer.Argument(help="Folder of ACDC patient folders.")] = None,
) -> None:
    """Cardiac indices of an ACDC cohort from its reference masks, by pathology group."""
    from scheduler.reference_indices import acdc_patient_folders, reference_indices, summarize_by_group
    from scheduler.reports import group_table

    root = source or get_settings().acdc_training_dir
    folders = acdc_patient_folders(root)
    results = []
    with _progress() as progress:
        task = progress.add_task("reading references", total=len(folders))
        for result in reference_indices(folders):
            results.append(result)
            progress.advance(task)
    title = f"Reference cardiac indices of {len(folders)} patients in {root}"
    console.print(group_table(summarize_by_group(results), title))
    for result in results:
        if result.error:
            err_console.print(f"[red]error[/red] {escape(result.patient)}: {escape(result.error)}", highlight=False)


@app.command()
def convert(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder of one cine MR series (DICOM files, any names).")],
    out: Annotated[Path, typer.Argument(help="4D NIfTI to write (x, y, z, phase).")],
) -> None:
    """Convert a DICOM cine series to one 4D NIfTI, ordered by slice position and trigger time."""
    from heartseg.studies.dicom import load_dicom_cine, write_cine_nifti
    from heartseg.studies.geometry import GeometryLimits

    study = load_dicom_cine(dicom_dir, limits=GeometryLimits.from_settings(get_settings()))
    write_cine_nifti(study, out)
    spacing = ", ".join(f"{s:.4g}" for s in study.spacing)
    console.print(f"wrote {out}: {study.shape} x {len(study.frames)} phases, spacing ({spacing}) mm")


@app.command()
def phantom(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort into (ACDC layout).")],
    patients: Annotated[int, typer.Option("--patients", min=1, help="Number of patients.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed writes the same cohort.")] = 0,
) -> None:
    """Write a synthetic cine MRI phantom cohort with exactly known volumes (Truth.json per patient)."""
    from heartseg.phantom import write_cohort

    with _progress() as progress:
        task = progress.add_task("writing phantoms", total=patients)
        truths = write_cohort(out, patients, seed, on_patient=lambda _: progress.advance(task))
    console.print(f"wrote {len(truths)} phantom patients to {out}")


_DEVICES = ("auto", "cpu", "cuda")


def _predict_folders(in_arg: Path | None, out_arg: Path | None, in_opt: Path | None,
                     out_opt: Path | None) -> tuple[Path, Path]:
    """The input and output folders of ``predict``, given as arguments (``IN OUT``) or as ``-i IN -o OUT``.

    Raises
    ------
    ConfigurationError
        When both forms are mixed, or a folder is missing.
    """
    from heartseg.errors import ConfigurationError

    if (in_opt or out_opt) and (in_arg or out_arg):
        raise ConfigurationError("predict: give the folders as arguments (IN OUT) or as -i IN -o OUT, not both")
    in_dir, out_dir = (in_opt, out_opt) if in_opt or out_opt else (in_arg, out_arg)
    if in_dir is None or out_dir is None:
        raise ConfigurationError(f"predict: missing the {'input' if in_dir is None else 'output'} folder "
                                 "(predict IN OUT, or -i IN -o OUT)")
    return in_dir, out_dir


def fast_settings(settings: Settings, model_dir: Path) -> Settings:
    """``--fast`` (as TotalSegmentator's): one fold (the first chosen, else the first present) and no mirroring."""
    from heartseg.models import available_folds

    chosen = settings.folds or list(available_folds(model_dir, settings.checkpoint_name))[:1]
    return settings.model_copy(update={"folds": chosen[:1] or None, "use_mirroring": False})


def _predict_settings(settings: Settings, model_dir: Path, folds: list[str] | None, checkpoint: str | None,
                      device: str | None, no_tta: bool, fast: bool = False) -> Settings:
    """The settings with ``predict``'s options applied over the environment; folds and the device checked
    (no torch), so a wrong one fails before the model loads.

    Raises
    ------
    ConfigurationError
        A device that is not cpu, cuda[:N] or auto, or a fold the model folder does not have.
    """
    from heartseg.errors import ConfigurationError
    from heartseg.models import available_folds

    update: dict[str, Any] = {}
    if folds:
        update["folds"] = [f.strip() for item in folds for f in item.split(",") if f.strip()]
    if checkpoint is not None:
        update["checkpoint_name"] = checkpoint
    if device is not None:
        update["device"] = device
    if no_tta:
        update["use_mirroring"] = False
    settings = settings.model_copy(update=update)
    if fast:
        settings = fast_settings(settings, model_dir)
    kind, _, index = settings.device.partition(":")
    if kind not in _DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigurationError(f"-device {settings.device!r}: use cpu, cuda, cuda:N or auto")
    if settings.folds and model_dir.is_dir():
        present = available_folds(model_dir, settings.checkpoint_name)
        missing = [f for f in settings.folds if f not in present]
        if missing:
            raise ConfigurationError(
                f"-f: fold{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found in {model_dir} "
                f"(folds with {settings.checkpoint_name}: {', '.join(present) or 'none'})")
    return settings


@app.command()
def predict(
    in_arg: Annotated[Path | None, typer.Argument(metavar="IN", show_default=False,
                                                  help="Folder of NIfTI images (3D frames or 4D cines); or -i.")]
        = None,
    out_arg: Annotated[Path | None, typer.Argument(metavar="OUT", show_default=False,
                                                   help="Folder for the label maps (same names; '_0000' dropped); "
                                                        "or -o.")] = None,
    in_opt: Annotated[Path | None, typer.Option("-i", help="Input folder (instead of the IN argument).",
                                                show_default=False)] = None,
    out_opt: Annotated[Path | None, typer.Option("-o", help="Output folder (instead of the OUT argument).",
                                                 show_default=False)] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", envvar="HEARTSEG_MODEL_DIR", show_default=False,
                                               help="nnU-Net model folder (default: shipped).")] = None,
    folds: Annotated[list[str] | None, typer.Option(
        "-f", "--folds", show_default=False,
        help="Folds to ensemble: repeat (-f 0 -f 1) or a comma list (-f 0,1); default: HEARTSEG_FOLDS, "
             "else every fold present.")] = None,
    checkpoint: Annotated[str | None, typer.Option("-chk", "--checkpoint", envvar="HEARTSEG_CHECKPOINT_NAME",
                                                   show_default=False,
                                                   help="Checkpoint file inside each fold "
                                                        "(default: checkpoint_final.pth).")] = None,
    no_tta: Annotated[bool, typer.Option("--no-tta", "--disable_tta",
                                         help="Disable mirroring test-time augmentation (as "
                                              "HEARTSEG_USE_MIRRORING=false).")] = False,
    device: Annotated[str | None, typer.Option("-device", "--device", envvar="HEARTSEG_DEVICE", show_default=False,
                                               help="cpu, cuda (cuda:N) or auto (default: cuda when available).")]
        = None,
    continue_prediction: Annotated[bool, typer.Option(
        "--continue_prediction",
        help="Skip inputs whose output file already exists.")] = False,
    fast: Annotated[bool, typer.Option("--fast", help="One fold (the first of -f, else fold 0) without mirroring: "
                                                      "for CPU hosts.")] = False,
) -> None:
    """Segment every NIfTI image in a folder with an nnU-Net v2 model, in this process.

    nnU-Net's flags work too: -i, -o, -m, -f, -chk, -device, --disable_tta, --continue_prediction.
    Options override the HEARTSEG_* variables shown.
    """
    from heartseg.models import model_files
    from heartseg.studies.geometry import GeometryLimits
    from heartseg.studies.nifti import is_nifti

    in_dir, out_dir = _predict_folders(in_arg, out_arg, in_opt, out_opt)
    settings = get_settings()
    model_dir = model or settings.model_dir
    settings = _predict_settings(settings, model_dir, folds, checkpoint, device, no_tta, fast)
    model_files(model_dir, settings.folds, settings.checkpoint_name)  # a missing model fails before torch loads
    n_files = sum(1 for p in in_dir.glob("*") if p.is_file() and is_nifti(p)) if in_dir.is_dir() else 0
    from workers.inference.folder import predict_folder  # imports torch: only this command needs it
    from workers.inference.predictor import Segmenter

    segmenter = Segmenter.from_settings(settings, model_dir=model_dir)
    with _progress() as progress:
        task = progress.add_task("segmenting", total=n_files)
        results = predict_folder(segmenter, in_dir, out_dir, on_file=lambda _: progress.advance(task),
                                 limits=GeometryLimits.from_settings(settings), skip_existing=continue_prediction)
    done = [r for r in results if r.output and not r.skipped]
    skipped = [r for r in results if r.skipped]
    console.print(f"segmented {len(done)} of {len(results)} images into {out_dir} (model {segmenter.fingerprint[:12]})"
                  + (f", {len(skipped)} skipped (output exists)" if continue_prediction else ""))
    errors = [r for r in results if r.error]
    for result in errors:
        err_console.print(f"[red]error[/red] {escape(result.source.name)}: {escape(str(result.error))}",
                          highlight=False)
    if errors:
        raise typer.Exit(1)


@app.command()
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


db_app = typer.Typer(help="The record: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the record at HEARTSEG_DATABASE_URL to this HeartSeg's schema (back it up first). The commands
    only create the schema in an empty database; a PostgreSQL record at an older revision needs this."""
    from db.migrate import record_revision, upgrade
    from db.session import make_engine

    engine = make_engine(get_settings().database_url)
    before = record_revision(engine)
    upgrade(engine, revision)
    after = record_revision(engine)
    change = f"from {before or 'empty'} to {after}" if before != after else f"already at {after}"
    console.print(f"record at {engine.url.render_as_string(hide_password=True)}: {change}", highlight=False,
                  soft_wrap=True)


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="Run name.")],
    html: Annotated[Path | None, typer.Option("--html", help="Write a static page here (DIR/index.html, PNGs).",
                                              file_okay=False)] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the machine-readable summary here.",
                                                   dir_okay=False)] = None,
    worst: Annotated[int, typer.Option("--worst", min=0, help="Montages of the N studies with the lowest mean "
                                                              "Dice (besides every flagged study).")] = 5,
) -> None:
    """Cohort statistics of a run: status, Dice/HD95 by group, index agreement, failures.

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
        _print_viewer_links(engine, settings, run)
        return
    from scheduler.report_page import write_report

    for path in write_report(engine, settings, run, html=html, json_path=json_file, worst_n=worst):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _print_viewer_links(engine: Engine, settings: Settings, run: str) -> None:
    """One line per study of the run in the viewer's PACS, flagged studies first: patient, flagged, viewer URL
    (whole, on one line, to click or copy); nothing when no study has one."""
    from scheduler.viewer.links import ViewerLinks, run_viewer_links

    rows = run_viewer_links(engine, run, ViewerLinks.from_settings(settings))
    if rows:
        console.print(f"{run}: studies in the viewer (heartseg viewer), flagged first", highlight=False)
    for row in rows:
        console.print(f"  {row['patient_id']}{' (flagged)' if row['flagged'] else ''}: {row['viewer_url']}",
                      highlight=False, soft_wrap=True)


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run name.")],
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


@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="Folder or s3://bucket/prefix of studies (ACDC patient folders, "
                                                "DICOM series folders or NIfTI files), or a PACS: "
                                                "dicomweb://HOST:PORT/dicom-web.")],
    model: Annotated[Path | None, typer.Option("--model", help="nnU-Net model folder (default: shipped).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name (default: derived from the source).")] = None,
    frames: Annotated[Frames, typer.Option("--frames", help="The frames to segment: ED and ES, or the whole cine.")]
        = Frames.ED_ES,
    force: Annotated[bool, typer.Option("--force", help="Redo studies this model has already done.")] = False,
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
    from scheduler.enqueue import enqueue_segmentation
    from scheduler.submit import submit_sources
    from workers.celery_app import create_app

    model_dir = model or settings.model_dir
    name = run or f"{Path(source.rstrip('/')).name}-{frames}"
    discovery = discover_studies(source, settings, Selection(tuple(studies or ()), series))
    engine = open_record(settings.database_url)
    submission = submit_sources(engine, settings, name=name, source_uri=source, sources=discovery.sources,
                                model_dir=model_dir, frames=frames, force=force)
    for entry, reason in [*discovery.skipped, *submission.refused]:
        err_console.print(f"[yellow]skipped[/yellow] {escape(entry)}: {escape(reason)}", highlight=False)
    with _progress() as progress:
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


#: How long ``heartseg run`` and ``heartseg demo`` give their workers to start before a queue without one is shown.
STARTING_S = 120.0
#: ``heartseg status`` and ``heartseg run``'s exit status when the record could not be reached.
EXIT_UNREACHABLE = 3


@app.command()
def status(
    run: Annotated[str, typer.Argument(help="Run name.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until every study is done or failed.")] = False,
    poll_s: Annotated[float, typer.Option("--poll", help="Seconds between looks at the record.")] = 2.0,
    unreachable_s: Annotated[float, typer.Option(
        "--unreachable-timeout", help="Give up (exit 3) after the record did not answer for this many seconds.")]
        = 600.0,
) -> None:
    """Progress of a run and its live workers, from the record. Exit 1 if any study failed, 3 if the record could
    not be reached. Nothing needs it to run: the workers heal the record themselves."""
    from scheduler.progress import RecordUnreachableError, follow_run

    try:
        counts = follow_run(get_settings(), run, wait=wait, poll_s=poll_s, console=err_console,
                            unreachable_s=unreachable_s)
    except RecordUnreachableError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE) from exc
    console.print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if counts.get(StudyStatus.FAILED):
        raise typer.Exit(1)


@app.command()
def reconcile(
    loop: Annotated[bool, typer.Option("--loop", help="Run a pass every --every seconds until stopped.")] = False,
    every_s: Annotated[float | None, typer.Option(
        "--every", help="Seconds between passes with --loop [env var: HEARTSEG_RECONCILE_S].")] = None,
) -> None:
    """Heal the record: re-queue studies whose worker died, fail those out of tries (HEARTSEG_MAX_ATTEMPTS), send
    again the messages a broker lost. Every worker already does this; run it with --loop where workers may all be
    gone (one replica)."""
    import signal
    import socket
    import threading

    from db.session import open_record
    from scheduler.reconciler import reconcile_forever, reconcile_once
    from workers.celery_app import create_app
    from workers.heartbeat import WorkerState, beat

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


@app.command()
def retry(
    run: Annotated[str, typer.Argument(help="Run name.")],
    failed: Annotated[bool, typer.Option("--failed", help="Re-enqueue the run's failed studies.")] = False,
) -> None:
    """Re-enqueue a run's failed studies (after fixing their input)."""
    from db.lifecycle import requeue_failed
    from db.queries import require_run
    from db.session import open_record, session_scope
    from scheduler.enqueue import enqueue_segmentation
    from workers.celery_app import create_app

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


@app.command("run")
def run_command(
    source: Annotated[str, typer.Argument(help="Folder or s3://bucket/prefix of studies.")],
    model: Annotated[Path | None, typer.Option("--model", help="nnU-Net model folder (default: shipped).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name (default: derived from the source).")] = None,
    frames: Annotated[Frames, typer.Option("--frames", help="The frames to segment: ED and ES, or the whole cine.")]
        = Frames.ED_ES,
    force: Annotated[bool, typer.Option("--force", help="Redo studies this model has already done.")] = False,
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
    """Everything on this host in one command: start workers, submit, follow, report, stop the workers.
    Exit 1 if a study failed or could not be published, 2 if a worker could not start (its reason is shown)."""
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


worker_app = typer.Typer(help="Start Celery workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")


@worker_app.command("gpu")
def worker_gpu(
    devices: Annotated[str, typer.Option("--devices", help="CUDA device numbers (0,1), 'cpu', or 'auto': every "
                                                     "GPU of this host, else the CPU.")] = "auto",
) -> None:
    """One segmentation worker process per device (pinned with CUDA_VISIBLE_DEVICES), each holding
    HEARTSEG_STUDIES_IN_FLIGHT studies at once on threads that share its model."""
    from scheduler.worker_launcher import gpu_worker_commands, resolve_devices, run_workers

    devices_list = resolve_devices(devices)
    settings = get_settings()
    raise typer.Exit(run_workers(gpu_worker_commands(devices_list, metrics_port=settings.metrics_port,
                                                     studies_in_flight=settings.studies_in_flight)))


@worker_app.command("cpu")
def worker_cpu(concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 2) -> None:
    """The metrics and cardiac-indices worker."""
    from scheduler.worker_launcher import cpu_worker_command, run_workers

    raise typer.Exit(run_workers([cpu_worker_command(concurrency, metrics_port=get_settings().metrics_port)]))


@app.command()
def flower(
    address: Annotated[str, typer.Option("--address", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5555,
) -> None:
    """Flower on the HeartSeg Celery app, with basic auth from FLOWER_BASIC_AUTH (required off loopback)."""
    import os

    from scheduler.worker_launcher import check_flower_auth, flower_command

    check_flower_auth(address, os.environ.get("FLOWER_BASIC_AUTH"))
    argv = flower_command(address, port)
    os.execv(argv[0], argv)


@app.command()
def viewer(
    address: Annotated[str, typer.Option("--address", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 3000,
    pacs: Annotated[str | None, typer.Option(
        "--pacs", show_default=False,
        help="The PACS to show, dicomweb://HOST:PORT/PATH [env var: HEARTSEG_DICOMWEB_URL].")] = None,
) -> None:
    """OHIF's viewer of the PACS with HeartSeg's SEGs over the images, through a same-origin proxy that adds
    HEARTSEG_DICOMWEB_AUTH; basic auth from HEARTSEG_VIEWER_AUTH (required off loopback)."""
    from heartseg.extras import require

    require("heartseg viewer", "viewer", "tornado")
    from scheduler.viewer.dist import OHIF_VERSION
    from scheduler.viewer.server import ViewerOptions, serve

    options = ViewerOptions.from_settings(get_settings(), address, pacs)
    console.print(f"OHIF {OHIF_VERSION} on http://{address}:{port}/ showing {options.pacs_url}"
                  f"{'' if options.login else ' (no login: loopback only)'}", highlight=False, soft_wrap=True)
    serve(options, address, port)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
