"""Small helpers that put known values into a record."""

from __future__ import annotations

from sqlalchemy import Engine

from db.session import session_scope
from db.writes import add_studies, ensure_model, ensure_run, record_indices, record_mask, record_metrics
from heartseg.enums import Frames, IndexSource, PhaseSource
from heartseg.labels import Phase, Structure

FINGERPRINT = "a" * 64


def new_run(engine: Engine, name: str, fingerprint: str = FINGERPRINT, sources: list[str] | None = None,
            groups: list[str] | None = None) -> tuple[int, dict[str, int]]:
    """A run with studies queued; returns (model id, {source uri: study id})."""
    from sqlalchemy import select

    from db.schema import Study

    sources = sources or ["s1"]
    groups = groups or ["NOR"] * len(sources)
    with session_scope(engine) as session:
        model_id = ensure_model(session, fingerprint=fingerprint, path="/models/x", configuration="2d", folds="0",
                                checkpoint_name="checkpoint_final.pth", use_mirroring=False, tile_step_size=0.5)
        run_id = ensure_run(session, name=name, source_uri="/data", model_id=model_id, frames=Frames.ED_ES)
        add_studies(session, run_id, [{"source_uri": s, "patient_id": s, "pathology_group": g}
                                      for s, g in zip(sources, groups, strict=True)])
        ids = dict(session.execute(select(Study.source_uri, Study.id).where(Study.run_id == run_id)).all())
    return model_id, ids


def metric_values(dice: float, hd95: float = 3.0, tp: int = 90, fp: int = 5, fn: int = 5) -> dict[str, float]:
    return {"dice": dice, "iou": dice / (2 - dice) if dice == dice else dice, "tp": tp, "fp": fp, "fn": fn,
            "hd95_mm": hd95, "assd_mm": 1.0, "vol_pred_ml": 10.0, "vol_ref_ml": 11.0}


def index_values(lv_edv: float, lv_esv: float, rv_edv: float = 150.0, rv_esv: float = 70.0,
                 mass: float = 110.0) -> dict[str, object]:
    return {
        "ed_frame": 1, "es_frame": 10, "phase_source": PhaseSource.STATED,
        "lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_sv_ml": lv_edv - lv_esv,
        "lv_ef_pct": (lv_edv - lv_esv) / lv_edv * 100,
        "rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_sv_ml": rv_edv - rv_esv,
        "rv_ef_pct": (rv_edv - rv_esv) / rv_edv * 100, "myo_mass_g": mass,
    }


def write_results(engine: Engine, study_id: int, model_id: int, dice: dict[Structure, float] | None = None) -> None:
    """Mask, metrics and indices of frames 1 (ED) and 10 (ES) for one study."""
    dice = dice or {Structure.RV: 0.8, Structure.MYO: 0.85, Structure.LV: 0.9}
    with session_scope(engine) as session:
        for frame, phase in ((1, Phase.ED), (10, Phase.ES)):
            record_mask(session, study_id=study_id, model_id=model_id, frame=frame, phase=phase,
                        uri=f"/masks/{study_id}_{frame}.nii.gz", sha256="0" * 64, shape=(10, 10, 5),
                        spacing=(1.5, 1.5, 10.0))
            record_metrics(session, study_id=study_id, model_id=model_id, frame=frame, phase=phase,
                           metrics={s: metric_values(d) for s, d in dice.items()})
        record_indices(session, study_id=study_id, model_id=model_id, source=IndexSource.PRED,
                       indices=index_values(120, 50))
        record_indices(session, study_id=study_id, model_id=model_id, source=IndexSource.REF,
                       indices=index_values(125, 48))
