"""``make model``: reproduce HeartSeg's shipped nnU-Net v2 model from the shared ACDC data.

Steps (each resumable; rerunning skips what is done):

1. ``prepare``: convert the 100 ACDC patients to ``Dataset027_ACDC`` (ED and ES frames as
   cases), extract nnU-Net's fingerprint, plan with nnunetv2's ``ExperimentPlanner``, derive
   the reduced ``HeartSegPlans`` 2d configuration, preprocess, and write the patient split.
2. ``train --stop-after 17``: train fold 0 with :class:`~workers.training.trainer.HeartSegTrainer`
   through nnunetv2's Python API on the 80 ACDC training patients for the first 17 of the 48
   epochs (an interrupted run continues from ``checkpoint_latest.pth``).
3. ``add-phantoms``: generate 40 phantom patients (seed 777, named ``synthNNN``), add their ED
   and ES frames to the dataset and to the training split, preprocess again.
4. ``train``: continue the same schedule to epoch 48 on ACDC + phantoms, so that the model
   segments both real hearts and the phantoms used by the tests and the demo.
5. ``export``: write the model folder in nnU-Net's trained-model layout with the optimiser
   state removed (``models/Dataset027_ACDC/nnUNetTrainer__HeartSegPlans__2d``).
6. ``postprocess``: segment the 20 validation patients' ED and ES frames with the exported model
   (mirroring on), let nnunetv2's ``determine_postprocessing`` decide which connected-component rules help,
   and store its ``postprocessing.pkl`` and ``postprocessing.json`` in the model folder
   (:mod:`workers.training.postprocess`; it uses the exported checkpoint, no training).

Usage: ``python -m workers.training.recipe {prepare,train,add-phantoms,export,postprocess,all} [--work DIR]``.
``all`` runs the six steps in order (``make model``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

from heartseg.settings import PROJECT_ROOT, get_settings
from workers.training.dataset import DATASET_NAME, convert_acdc, write_split
from workers.training.split import TRAINING_PATIENTS, VALIDATION_PATIENTS

DATASET_ID = 27
PLANS_NAME = "HeartSegPlans"
CONFIGURATION = "2d"
FOLD = 0
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


def set_nnunet_paths(work: Path) -> None:
    """Point nnU-Net's three path variables into ``work`` (before nnunetv2 is imported)."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    os.environ.setdefault("nnUNet_compile", "false")


def prepare(work: Path) -> None:
    """Convert, fingerprint, plan, derive the reduced plans, preprocess, split."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    acdc = get_settings().acdc_training_dir
    if not acdc.is_dir():
        sys.exit(f"ACDC training data not found at {acdc} (set HEARTSEG_SHARED_DATA)")
    raw = convert_acdc(acdc, work / "nnUNet_raw", TRAINING_PATIENTS + VALIDATION_PATIENTS)
    pre = work / "nnUNet_preprocessed" / DATASET_NAME
    if not (pre / "dataset_fingerprint.json").is_file():
        extract_fingerprints([DATASET_ID], num_processes=2, check_dataset_integrity=True)
    if not (pre / "nnUNetPlans.json").is_file():
        plan_experiments([DATASET_ID])
    derive_plans(pre / "nnUNetPlans.json", pre / f"{PLANS_NAME}.json")
    data_folder = pre / f"{PLANS_NAME}_{CONFIGURATION}"
    if not data_folder.is_dir() or len(list(data_folder.glob("*.pkl"))) < 200:
        preprocess([DATASET_ID], plans_identifier=PLANS_NAME, configurations=(CONFIGURATION,), num_processes=(2,))
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    write_split(pre, TRAINING_PATIENTS, VALIDATION_PATIENTS, cases)


def phantom_patients() -> tuple[str, ...]:
    """Names of the training phantoms."""
    return tuple(f"{PHANTOM_PREFIX}{i:03d}" for i in range(1, N_PHANTOMS + 1))


def add_phantoms(work: Path) -> None:
    """Generate the training phantoms, add their ED/ES frames as cases and to the training split."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess

    from heartseg.phantom import write_cohort

    folder = work / "phantoms"
    if not (folder / phantom_patients()[-1] / "Truth.json").is_file():
        write_cohort(folder, N_PHANTOMS, PHANTOM_SEED, prefix=PHANTOM_PREFIX)
    raw = convert_acdc(folder, work / "nnUNet_raw", phantom_patients())
    preprocess([DATASET_ID], plans_identifier=PLANS_NAME, configurations=(CONFIGURATION,), num_processes=(2,))
    pre = work / "nnUNet_preprocessed" / DATASET_NAME
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    write_split(pre, TRAINING_PATIENTS + phantom_patients(), VALIDATION_PATIENTS, cases)


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


def train(work: Path, epochs: int, iterations: int, stop_after: int | None = None) -> Path:
    """Train (or continue training) fold 0, pausing after ``stop_after`` epochs; returns the fold's folder."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from workers.training.trainer import HeartSegTrainer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    HeartSegTrainer.epochs = epochs
    HeartSegTrainer.iterations_per_epoch = iterations
    HeartSegTrainer.stop_after_epoch = stop_after
    pre = work / "nnUNet_preprocessed" / DATASET_NAME
    plans = load_json(str(pre / f"{PLANS_NAME}.json"))
    dataset_json = load_json(str(pre / "dataset.json"))
    output = work / "nnUNet_results" / DATASET_NAME / f"HeartSegTrainer__{PLANS_NAME}__{CONFIGURATION}" / f"fold_{FOLD}"
    latest = output / "checkpoint_latest.pth"
    final = output / "checkpoint_final.pth"
    if final.is_file():
        print(f"training already finished: {final}")
        return output
    plans["continue_training"] = latest.is_file()
    trainer = HeartSegTrainer(plans, CONFIGURATION, FOLD, dataset_json, device=torch.device("cpu"))
    if latest.is_file():
        trainer.load_checkpoint(str(latest))
    started = time.time()
    trainer.run_training()
    (output / "heartseg_training_time.txt").write_text(f"{time.time() - started:.0f} s this invocation\n")
    return output


def export(work: Path, target: Path = EXPORT_DIR, checkpoint: str = "checkpoint_final.pth") -> Path:
    """Write the trained-model folder without optimiser state, naming ``nnUNetTrainer`` as trainer."""
    import torch

    source = work / "nnUNet_results" / DATASET_NAME / f"HeartSegTrainer__{PLANS_NAME}__{CONFIGURATION}"
    ckpt = torch.load(source / f"fold_{FOLD}" / checkpoint, map_location="cpu", weights_only=False)
    slim = {
        "network_weights": ckpt["network_weights"],
        "trainer_name": "nnUNetTrainer",  # same network; resolvable by every nnunetv2 install
        "inference_allowed_mirroring_axes": ckpt["inference_allowed_mirroring_axes"],
        "current_epoch": ckpt["current_epoch"],
        "init_args": {
            "configuration": ckpt["init_args"]["configuration"],
            "fold": ckpt["init_args"]["fold"],
        },
    }
    (target / f"fold_{FOLD}").mkdir(parents=True, exist_ok=True)
    torch.save(slim, target / f"fold_{FOLD}" / "checkpoint_final.pth")
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        shutil.copyfile(source / name, target / name)
    return target


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of the recipe."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "train", "add-phantoms", "export", "postprocess", "all"))
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / "work" / "nnunet")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument("--stop-after", type=int, default=None, help="pause after this many epochs")
    parser.add_argument("--acdc-only-epochs", type=int, default=ACDC_ONLY_EPOCHS,
                        help="with 'all': epochs before the phantoms join")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--export-dir", type=Path, default=EXPORT_DIR, help="where 'export' writes the model folder")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    set_nnunet_paths(work)
    if args.step in ("prepare", "all"):
        prepare(work)
    if args.step == "train":
        train(work, args.epochs, args.iterations, args.stop_after)
    if args.step == "add-phantoms":
        add_phantoms(work)
    if args.step == "all":
        train(work, args.epochs, args.iterations, args.acdc_only_epochs)
        add_phantoms(work)
        train(work, args.epochs, args.iterations)
    if args.step in ("export", "all"):
        print(export(work, target=args.export_dir, checkpoint=args.checkpoint))
    if args.step in ("postprocess", "all"):
        from workers.training.postprocess import postprocess

        print(postprocess(args.export_dir.resolve(), work / "postprocessing"))


if __name__ == "__main__":
    main()
