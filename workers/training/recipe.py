"""``make model``: reproduce HeartSeg's shipped five-fold nnU-Net v2 model from the shared ACDC data.

Steps (each resumable; rerunning skips what is done):

1. ``prepare``: convert the 100 ACDC patients to ``Dataset027_ACDC`` (ED and ES frames as cases), extract
   nnU-Net's fingerprint, plan with nnunetv2's ``ExperimentPlanner``, derive the reduced ``HeartSegPlans``
   2d configuration; then generate 40 phantom patients (seed 777, named ``synthNNN``), add their ED and ES
   frames as cases (after planning, so they change neither spacing nor network), preprocess everything and
   write the five-fold split (:mod:`workers.training.split`) as ``splits_final.json``.
2. ``train --fold F``: train fold F with :class:`~workers.training.trainer.HeartSegTrainer` through
   nnunetv2's Python API, 48 epochs of 100 iterations: the first 17 on the fold's 80 ACDC training
   patients, the rest with the phantoms added to its training side, so that the model also segments the
   phantoms the tests and the demo use. A fold that stops (a session ending, Ctrl-C, ``--stop-after``)
   continues from its ``checkpoint_latest.pth`` when the step runs again; a finished fold is skipped.
3. ``export --fold F``: copy fold F into the model folder in nnU-Net's trained-model layout, without the
   optimiser state (``models/Dataset027_ACDC/nnUNetTrainer__HeartSegPlans__2d/fold_F``).
4. ``postprocess`` (a single-fold model only): segment fold 0's validation patients with the exported model
   (mirroring on), let nnunetv2's ``determine_postprocessing`` decide which connected-component rules help,
   and store its ``postprocessing.pkl`` and ``postprocessing.json`` in the model folder
   (:mod:`workers.training.postprocess`). A five-fold model decides it on all out-of-fold frames instead
   (:mod:`workers.training.crossval`), which ``make model`` runs after this recipe.

Usage: ``python -m workers.training.recipe {prepare,train,export,postprocess,all} [--fold F] [--work DIR]``.
``all`` runs prepare, train and export for the folds given (all five by default; ``make model``). On 2 CPU
cores a fold takes about 1.5 to 2 hours; run it in the background at low priority, e.g.
``nice -n 19 python -m workers.training.recipe train --fold 1 --threads 2 --results DIR`` (``--results``
puts the checkpoints where they outlive the work folder; the prepared data is rebuilt by ``prepare``).
Each fold writes where and how long it trained to ``heartseg_training_log.jsonl`` in its folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from heartseg.phantom import write_cohort
from heartseg.settings import PROJECT_ROOT, get_settings
from workers.training.dataset import DATASET_NAME, convert_acdc, write_split
from workers.training.split import ALL_PATIENTS, N_FOLDS, fold_patients

DATASET_ID = 27
PLANS_NAME = "HeartSegPlans"
CONFIGURATION = "2d"
#: The reduced 2d network: nnU-Net's default has 32..512 features per stage and larger patches.
FEATURES_PER_STAGE = (16, 32, 64, 128, 128, 128)
PATCH_SIZE = (160, 160)
BATCH_SIZE = 12
#: The shipped model's schedule: 48 epochs of 100 iterations (about 90 minutes on 2 CPU cores).
DEFAULT_EPOCHS = 48
DEFAULT_ITERATIONS = 100
#: Epochs on ACDC alone before the phantoms join the training set.
ACDC_ONLY_EPOCHS = 17
N_PHANTOMS = 40
PHANTOM_SEED = 777
PHANTOM_PREFIX = "synth"
EXPORT_DIR = PROJECT_ROOT / "models" / DATASET_NAME / f"nnUNetTrainer__{PLANS_NAME}__{CONFIGURATION}"


def set_nnunet_paths(work: Path, results: Path | None = None) -> None:
    """Point nnU-Net's three path variables into ``work`` (before nnunetv2 is imported).

    ``results`` puts the trained folds (checkpoints, logs) elsewhere, e.g. where they outlive ``work``.
    """
    folders = {"nnUNet_raw": work / "nnUNet_raw", "nnUNet_preprocessed": work / "nnUNet_preprocessed",
               "nnUNet_results": results or work / "nnUNet_results"}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    os.environ.setdefault("nnUNet_compile", "false")


def prepare(work: Path) -> None:
    """Convert, fingerprint, plan, derive the reduced plans, add the phantoms, preprocess, split.

    The fingerprint and the plans come from the 100 ACDC patients alone; the phantoms are converted
    after planning, so they change neither the target spacing nor the network.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    acdc = get_settings().acdc_training_dir
    if not acdc.is_dir():
        sys.exit(f"ACDC training data not found at {acdc} (set HEARTSEG_SHARED_DATA)")
    convert_acdc(acdc, work / "nnUNet_raw", ALL_PATIENTS)
    pre = work / "nnUNet_preprocessed" / DATASET_NAME
    if not (pre / "dataset_fingerprint.json").is_file():
        extract_fingerprints([DATASET_ID], num_processes=2, check_dataset_integrity=True)
    if not (pre / "nnUNetPlans.json").is_file():
        plan_experiments([DATASET_ID])
    derive_plans(pre / "nnUNetPlans.json", pre / f"{PLANS_NAME}.json")
    phantoms = work / "phantoms"
    if not (phantoms / phantom_patients()[-1] / "Truth.json").is_file():
        write_cohort(phantoms, N_PHANTOMS, PHANTOM_SEED, prefix=PHANTOM_PREFIX)
    convert_acdc(phantoms, work / "nnUNet_raw", phantom_patients())
    data_folder = pre / f"{PLANS_NAME}_{CONFIGURATION}"
    n_cases = 2 * (len(ALL_PATIENTS) + N_PHANTOMS)
    if not data_folder.is_dir() or len(list(data_folder.glob("*.pkl"))) < n_cases:
        preprocess([DATASET_ID], plans_identifier=PLANS_NAME, configurations=(CONFIGURATION,), num_processes=(2,))
    write_fold_split(work, with_phantoms=False)


def phantom_patients() -> tuple[str, ...]:
    """Names of the training phantoms."""
    return tuple(f"{PHANTOM_PREFIX}{i:03d}" for i in range(1, N_PHANTOMS + 1))


def write_fold_split(work: Path, with_phantoms: bool) -> None:
    """Write the five folds as ``splits_final.json``; ``with_phantoms`` adds the phantoms to every training side."""
    raw = work / "nnUNet_raw" / DATASET_NAME
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    extra = phantom_patients() if with_phantoms else ()
    folds = [(train + extra, val) for train, val in (fold_patients(f) for f in range(N_FOLDS))]
    write_split(work / "nnUNet_preprocessed" / DATASET_NAME, folds, cases)


def derive_plans(default_plans: Path, target: Path) -> None:
    """Write ``HeartSegPlans``: nnU-Net's 2d plan with fewer features, smaller patches, 6 stages."""
    plans = json.loads(default_plans.read_text())
    config = copy.deepcopy(plans["configurations"][CONFIGURATION])
    n_stages = len(FEATURES_PER_STAGE)
    arch = config["architecture"]["arch_kwargs"]
    arch["n_stages"] = n_stages
    arch["features_per_stage"] = list(FEATURES_PER_STAGE)
    for key in ("kernel_sizes", "strides", "n_conv_per_stage"):
        arch[key] = list(arch[key])[:n_stages]
    arch["n_conv_per_stage_decoder"] = list(arch["n_conv_per_stage_decoder"])[: n_stages - 1]
    config["patch_size"] = list(PATCH_SIZE)
    config["batch_size"] = BATCH_SIZE
    config["data_identifier"] = f"{PLANS_NAME}_{CONFIGURATION}"
    plans["plans_name"] = PLANS_NAME
    plans["configurations"] = {CONFIGURATION: config}
    target.write_text(json.dumps(plans, indent=2))


def fold_output(work: Path, fold: int) -> Path:
    """nnU-Net's results folder of ``fold``: under ``$nnUNet_results`` once set, else under ``work``."""
    results = Path(os.environ.get("nnUNet_results") or work / "nnUNet_results")  # noqa: SIM112 - nnU-Net's name
    return results / DATASET_NAME / f"HeartSegTrainer__{PLANS_NAME}__{CONFIGURATION}" / f"fold_{fold}"


def epochs_done(output: Path) -> int:
    """Epochs finished by the fold in ``output`` (0 before its first checkpoint)."""
    import torch

    latest = output / "checkpoint_latest.pth"
    if not latest.is_file():
        return 0
    return int(torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"])


def train(work: Path, fold: int, epochs: int = DEFAULT_EPOCHS, iterations: int = DEFAULT_ITERATIONS,
          stop_after: int | None = None, acdc_only_epochs: int = ACDC_ONLY_EPOCHS,
          threads: int | None = None) -> Path:
    """Train (or continue training) ``fold`` to ``epochs`` (or ``stop_after``); returns the fold's folder.

    The first ``acdc_only_epochs`` epochs train on ACDC alone, the rest with the phantoms.
    """
    output = fold_output(work, fold)
    if (output / "checkpoint_final.pth").is_file():
        print(f"fold {fold}: training already finished ({output / 'checkpoint_final.pth'})")
        return output
    end = epochs if stop_after is None else min(epochs, stop_after)
    if epochs_done(output) < min(acdc_only_epochs, end):
        write_fold_split(work, with_phantoms=False)
        _train_until(work, fold, epochs, iterations, min(acdc_only_epochs, end), threads)
    if epochs_done(output) < end:
        write_fold_split(work, with_phantoms=True)
        _train_until(work, fold, epochs, iterations, None if end == epochs else end, threads)
    return output


def _train_until(work: Path, fold: int, epochs: int, iterations: int, stop_after: int | None,
                 threads: int | None) -> None:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from workers.training.trainer import HeartSegTrainer

    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    HeartSegTrainer.epochs = epochs
    HeartSegTrainer.iterations_per_epoch = iterations
    HeartSegTrainer.stop_after_epoch = stop_after
    pre = work / "nnUNet_preprocessed" / DATASET_NAME
    plans = load_json(str(pre / f"{PLANS_NAME}.json"))
    dataset_json = load_json(str(pre / "dataset.json"))
    output = fold_output(work, fold)
    latest = output / "checkpoint_latest.pth"
    start_epoch = epochs_done(output)
    plans["continue_training"] = latest.is_file()
    trainer = HeartSegTrainer(plans, CONFIGURATION, fold, dataset_json, device=torch.device("cpu"))
    if latest.is_file():
        trainer.load_checkpoint(str(latest))
    started = time.time()
    trainer.run_training()
    entry = {
        "fold": fold, "from_epoch": start_epoch, "to_epoch": epochs_done(output) if not
        (output / "checkpoint_final.pth").is_file() else epochs,
        "seconds": round(time.time() - started), "host": platform.node(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": "cpu", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with (output / "heartseg_training_log.jsonl").open("a") as log:
        log.write(json.dumps(entry) + "\n")


def export(work: Path, fold: int, target: Path = EXPORT_DIR, checkpoint: str = "checkpoint_final.pth",
           half: bool = False) -> Path:
    """Write ``fold`` into the trained-model folder without optimiser state, naming ``nnUNetTrainer`` as trainer.

    ``half`` stores the weights in half precision (the network still runs in float32: loading copies them
    into its float32 parameters), which halves the folder for a five-fold ensemble.
    """
    import torch

    source = fold_output(work, fold).parent
    ckpt = torch.load(source / f"fold_{fold}" / checkpoint, map_location="cpu", weights_only=False)
    weights = half_weights(ckpt["network_weights"]) if half else ckpt["network_weights"]
    slim = {
        "network_weights": weights,
        "trainer_name": "nnUNetTrainer",  # same network; resolvable by every nnunetv2 install
        "inference_allowed_mirroring_axes": ckpt["inference_allowed_mirroring_axes"],
        "current_epoch": ckpt["current_epoch"],
        "init_args": {
            "configuration": ckpt["init_args"]["configuration"],
            "fold": ckpt["init_args"]["fold"],
        },
    }
    (target / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    torch.save(slim, target / f"fold_{fold}" / "checkpoint_final.pth")
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        shutil.copyfile(source / name, target / name)
    return target


def half_weights(weights: dict[str, Any]) -> dict[str, Any]:
    """The state dict with its floating-point tensors in half precision; entries that share one tensor (nnU-Net's
    decoder holds its encoder) share its half copy too, so ``torch.save`` writes each once."""
    halves: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], Any] = {}
    converted = {}
    for name, tensor in weights.items():
        if not tensor.is_floating_point():
            converted[name] = tensor
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if key not in halves:
            halves[key] = tensor.half()
        converted[name] = halves[key]
    return converted


def _folds(text: str) -> list[int]:
    folds = sorted({int(part) for part in text.split(",") if part.strip()})
    if not folds or not all(0 <= f < N_FOLDS for f in folds):
        raise argparse.ArgumentTypeError(f"folds are 0..{N_FOLDS - 1}, e.g. 1 or 1,2,3")
    return folds


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of the recipe."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "train", "export", "postprocess", "all"))
    parser.add_argument("--fold", type=_folds, default=list(range(N_FOLDS)),
                        help="fold(s) to train or export, e.g. 1 or 1,2 (default all five)")
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / "work" / "nnunet")
    parser.add_argument("--results", type=Path, default=None,
                        help="where the folds' checkpoints go (default WORK/nnUNet_results)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument("--stop-after", type=int, default=None, help="pause after this many epochs")
    parser.add_argument("--acdc-only-epochs", type=int, default=ACDC_ONLY_EPOCHS,
                        help="epochs before the phantoms join")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--half", action="store_true", help="export half-precision weights")
    parser.add_argument("--export-dir", type=Path, default=EXPORT_DIR, help="where 'export' writes the model folder")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    set_nnunet_paths(work, args.results.resolve() if args.results else None)
    if args.step in ("prepare", "all"):
        prepare(work)
    if args.step in ("train", "all"):
        for fold in args.fold:
            train(work, fold, args.epochs, args.iterations, args.stop_after, args.acdc_only_epochs, args.threads)
    if args.step in ("export", "all"):
        for fold in args.fold:
            print(export(work, fold, target=args.export_dir, checkpoint=args.checkpoint, half=args.half))
    if args.step == "postprocess":
        from workers.training.postprocess import postprocess

        print(postprocess(args.export_dir.resolve(), work / "postprocessing"))


if __name__ == "__main__":
    main()
