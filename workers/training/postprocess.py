"""Recipe step ``postprocess``: nnU-Net's postprocessing for the shipped model, decided on the validation patients.

The 20 validation patients' ED and ES frames are segmented by the exported model as the model card
validates it (the :class:`~workers.inference.predictor.Segmenter`, mirroring on), without postprocessing;
the predictions and the references are written in the layout nnU-Net's ``determine_postprocessing`` reads
(two folders of ``<case>.nii.gz``, same names), and nnunetv2 itself decides whether keeping only the
largest connected component of the foreground, and then of each label, improves the Dice (it keeps a rule
only if no label gets worse). Its ``postprocessing.pkl`` and ``postprocessing.json`` are copied into the
model folder beside the fold folders, where the Segmenter and ``nnUNetv2_apply_postprocessing`` find them.
The checkpoint is neither retrained nor changed.

The predictions stay in ``WORK/postprocessing`` (with the fingerprint of the model that made them), so
:mod:`workers.training.postprocess_report` measures before and after without segmenting them again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from heartseg.models import POSTPROCESSING_FILE
from heartseg.settings import Settings, get_settings
from heartseg.studies.acdc import load_acdc_patient
from heartseg.studies.nifti import write_label_map
from workers.training.split import VALIDATION_PATIENTS

if TYPE_CHECKING:
    from workers.inference.predictor import Segmenter

#: nnU-Net's second output beside the pickle: the Dice before and after, the functions and their arguments.
POSTPROCESSING_JSON = "postprocessing.json"


def raw_segmenter(model_dir: Path, settings: Settings | None = None, *, use_mirroring: bool = True) -> Segmenter:
    """The model card's segmenter of ``model_dir`` (mirroring on unless asked), without postprocessing."""
    from workers.inference.predictor import Segmenter

    settings = (settings or get_settings()).model_copy(
        update={"model_dir": model_dir, "use_mirroring": use_mirroring, "postprocessing": False})
    return Segmenter.from_settings(settings)


def segment_validation(segmenter: Segmenter, acdc: Path, work: Path) -> tuple[Path, Path]:
    """Predictions (``work/pred``) and references (``work/ref``) of the validation patients' ED and ES frames,
    one ``patientNNN_frameNN.nii.gz`` per frame; kept from an earlier run of the same segmenter (fingerprint and
    mirroring in ``work/made_by.txt``)."""
    if segmenter.postprocessing:
        raise ValueError("determine the postprocessing on the network's own labels (a segmenter without it)")
    pred, ref = work / "pred", work / "ref"
    made_by = f"{segmenter.fingerprint} mirroring={segmenter.use_mirroring}\n"
    stamp = work / "made_by.txt"
    expected = [f"{p}_frame" for p in VALIDATION_PATIENTS]
    done = (stamp.is_file() and stamp.read_text() == made_by
            and len(list(pred.glob("*.nii.gz"))) == 2 * len(expected) == len(list(ref.glob("*.nii.gz"))))
    if done:
        return pred, ref
    shutil.rmtree(work, ignore_errors=True)
    pred.mkdir(parents=True)
    ref.mkdir(parents=True)
    for patient in VALIDATION_PATIENTS:
        folder = acdc / patient
        study = load_acdc_patient(folder, cine=False)
        labels = segmenter.segment_frames([frame.image for frame in study.frames], study.spacing)
        for frame, frame_labels in zip(study.frames, labels, strict=True):
            case = f"{patient}_frame{frame.number:02d}"
            write_label_map(pred / f"{case}.nii.gz", frame_labels, study.affine, study.header)
            shutil.copyfile(folder / f"{case}_gt.nii.gz", ref / f"{case}.nii.gz")
        print(f"segmented {patient}", flush=True)
    stamp.write_text(made_by)
    return pred, ref


def determine(model_dir: Path, pred: Path, ref: Path, num_processes: int = 2) -> dict[str, object]:
    """Run nnunetv2's ``determine_postprocessing`` on the folders and copy its pickle and JSON into ``model_dir``;
    returns the JSON's content."""
    import json

    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    for stale in ("summary.json", POSTPROCESSING_FILE, POSTPROCESSING_JSON):
        (pred / stale).unlink(missing_ok=True)
    shutil.rmtree(pred / "postprocessed", ignore_errors=True)
    determine_postprocessing(str(pred), str(ref), str(model_dir / "plans.json"), str(model_dir / "dataset.json"),
                             num_processes=num_processes, keep_postprocessed_files=False)
    for name in (POSTPROCESSING_FILE, POSTPROCESSING_JSON):
        shutil.copyfile(pred / name, model_dir / name)
    result: dict[str, object] = json.loads((model_dir / POSTPROCESSING_JSON).read_text())
    return result


def postprocess(model_dir: Path, work: Path, settings: Settings | None = None) -> Path:
    """The recipe step: segment the validation frames, let nnU-Net decide, store the decision in ``model_dir``."""
    settings = settings or get_settings()
    acdc = settings.acdc_training_dir
    if not acdc.is_dir():
        raise SystemExit(f"ACDC training data not found at {acdc} (set HEARTSEG_SHARED_DATA)")
    pred, ref = segment_validation(raw_segmenter(model_dir, settings), acdc, work)
    decision = determine(model_dir, pred, ref)
    print(f"postprocessing of {model_dir}: {decision['postprocessing_fns']} {decision['postprocessing_kwargs']}")
    return model_dir / POSTPROCESSING_FILE
