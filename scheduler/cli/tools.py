"""The data tools, which need neither record nor broker: ``predict``, ``evaluate``, ``convert``, ``phantom`` and
``reference-indices``.

Only ``predict`` imports torch and nnunetv2, inside its function, once its options are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from heartseg.settings import Settings, get_settings
from scheduler.cli.common import HeartSegCommand, console, err_console, fast_settings, progress_bar

app = typer.Typer()

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


@app.command(cls=HeartSegCommand)
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
    """Segment a folder of NIfTI images with an nnU-Net v2 model, in this process.

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
    with progress_bar() as progress:
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


@app.command(cls=HeartSegCommand)
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
    with progress_bar() as progress:
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


@app.command(cls=HeartSegCommand)
def convert(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder of one cine MR series (DICOM files, any names).")],
    out: Annotated[Path, typer.Argument(help="4D NIfTI to write (x, y, z, phase).")],
) -> None:
    """Convert a DICOM cine series to one 4D NIfTI.

    Slices are ordered by position, phases by trigger time.
    """
    from heartseg.studies.dicom import load_dicom_cine, write_cine_nifti
    from heartseg.studies.geometry import GeometryLimits

    study = load_dicom_cine(dicom_dir, limits=GeometryLimits.from_settings(get_settings()))
    write_cine_nifti(study, out)
    spacing = ", ".join(f"{s:.4g}" for s in study.spacing)
    console.print(f"wrote {out}: {study.shape} x {len(study.frames)} phases, spacing ({spacing}) mm")


@app.command(cls=HeartSegCommand)
def phantom(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort into (ACDC layout).")],
    patients: Annotated[int, typer.Option("--patients", min=1, help="Number of patients.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed writes the same cohort.")] = 0,
) -> None:
    """Write a synthetic cine MRI phantom cohort with exactly known volumes.

    Each patient's Truth.json holds its volumes.
    """
    from heartseg.phantom import write_cohort

    with progress_bar() as progress:
        task = progress.add_task("writing phantoms", total=patients)
        truths = write_cohort(out, patients, seed, on_patient=lambda _: progress.advance(task))
    console.print(f"wrote {len(truths)} phantom patients to {out}")


@app.command("reference-indices", cls=HeartSegCommand)
def reference_indices_command(
    source: Annotated[Path | None, typer.Argument(help="Folder of ACDC patient folders.")] = None,
) -> None:
    """Cardiac indices of an ACDC cohort's reference masks, by pathology group."""
    from scheduler.reference_indices import acdc_patient_folders, reference_indices, summarize_by_group
    from scheduler.reports import group_table

    root = source or get_settings().acdc_training_dir
    folders = acdc_patient_folders(root)
    results = []
    with progress_bar() as progress:
        task = progress.add_task("reading references", total=len(folders))
        for result in reference_indices(folders):
            results.append(result)
            progress.advance(task)
    title = f"Reference cardiac indices of {len(folders)} patients in {root}"
    console.print(group_table(summarize_by_group(results), title))
    for result in results:
        if result.error:
            err_console.print(f"[red]error[/red] {escape(result.patient)}: {escape(result.error)}", highlight=False)
