"""Idempotent writes: every row is keyed by a unique constraint and written with an upsert.

Doing a step twice (a retry, a duplicate delivery, two workers racing) leaves one row:
PostgreSQL ``INSERT ... ON CONFLICT`` and SQLite's equivalent make the check and the write
one atomic statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.records import RecordError, index_row, metric_row
from db.schema import CardiacIndex, IndexSource, Mask, Metric, Model, Run, Study, StudyStatus
from heartseg.labels import Phase


def upsert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           update: bool = True) -> None:
    """Insert ``rows``; where a row with the same ``keys`` exists, update it (or keep it)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(list(rows))
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(list(rows))
    else:
        raise RecordError(f"database dialect {dialect!r} is not supported; use PostgreSQL or SQLite")
    columns = [c for c in rows[0] if c not in keys]
    if update and columns:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys), set_={c: statement.excluded[c] for c in columns}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(statement)


def ensure_model(session: Session, *, fingerprint: str, path: str, configuration: str | None, folds: str,
                 checkpoint_name: str, use_mirroring: bool, tile_step_size: float) -> int:
    """The id of the model-as-used row, created on first use."""
    keys = {"fingerprint": fingerprint, "use_mirroring": use_mirroring, "tile_step_size": tile_step_size}
    upsert(session, Model.__table__, [{**keys, "path": path, "configuration": configuration, "folds": folds,
                                       "checkpoint_name": checkpoint_name}], list(keys), update=False)
    return session.execute(select(Model.id).filter_by(**keys)).scalar_one()


def ensure_run(session: Session, *, name: str, source_uri: str, model_id: int, frames: str) -> int:
    """The id of run ``name``, created if new; an existing run must use the same model."""
    upsert(session, Run.__table__, [{"name": name, "source_uri": source_uri, "model_id": model_id,
                                     "frames": frames}], ["name"], update=False)
    run = session.execute(select(Run).filter_by(name=name)).scalar_one()
    if run.model_id != model_id:
        raise RecordError(f"run {name!r} already exists with another model (id {run.model_id}); choose a new name")
    return run.id


def add_studies(session: Session, run_id: int, studies: Iterable[Mapping[str, Any]], batch: int = 2000) -> int:
    """Record studies of a run as queued, in batches; studies already in the run are kept. Returns the count."""
    rows = [{"run_id": run_id, "status": StudyStatus.QUEUED.value, "attempts": 0, **s} for s in studies]
    for start in range(0, len(rows), batch):
        upsert(session, Study.__table__, rows[start : start + batch], ["run_id", "source_uri"], update=False)
    return len(rows)


def record_mask(session: Session, *, study_id: int, model_id: int, frame: int, phase: Phase, uri: str,
                sha256: str, shape: Sequence[int], spacing: Sequence[float], seg_uri: str | None = None,
                seg_sha256: str | None = None) -> None:
    """Record (or re-record) the mask of one study frame (and its DICOM SEG, for a DICOM source)."""
    for name, digest in (("sha256", sha256), ("seg_sha256", seg_sha256 or "0" * 64)):
        if len(digest) != 64:
            raise RecordError(f"study {study_id} frame {frame}: {name} must be 64 hex digits, got {digest!r}")
    if (seg_uri is None) != (seg_sha256 is None):
        raise RecordError(f"study {study_id} frame {frame}: a SEG needs both its URI and its checksum")
    upsert(session, Mask.__table__, [{
        "study_id": study_id, "model_id": model_id, "frame": frame, "phase": Phase(phase).value, "uri": uri,
        "sha256": sha256, "shape": ",".join(str(int(n)) for n in shape),
        "spacing_x_mm": float(spacing[0]), "spacing_y_mm": float(spacing[1]), "spacing_z_mm": float(spacing[2]),
        "seg_uri": seg_uri, "seg_sha256": seg_sha256,
    }], ["study_id", "model_id", "frame"])


def record_metrics(session: Session, *, study_id: int, model_id: int, frame: int, phase: Phase,
                   metrics: Mapping[str, Mapping[str, float]]) -> None:
    """Record one frame's metrics, one row per structure (validated first: nothing is written on error)."""
    where = f"study {study_id} frame {frame}"
    rows = []
    for structure, values in metrics.items():
        row = metric_row(where, structure, values)
        row["structure"] = row["structure"].value
        rows.append({"study_id": study_id, "model_id": model_id, "frame": frame, "phase": Phase(phase).value, **row})
    upsert(session, Metric.__table__, rows, ["study_id", "model_id", "frame", "structure"])


def record_indices(session: Session, *, study_id: int, model_id: int, source: IndexSource | str,
                   indices: Mapping[str, object]) -> None:
    """Record a study's cardiac indices from predicted or reference masks."""
    source = IndexSource(source)
    row = index_row(f"study {study_id} {source.value} indices", indices)
    upsert(session, CardiacIndex.__table__, [{"study_id": study_id, "model_id": model_id, "source": source.value,
                                              **row}], ["study_id", "model_id", "source"])


def done_source_uris(session: Session, fingerprint: str, source_uris: Iterable[str] | None = None) -> set[str]:
    """Source URIs of studies already done by a model with this fingerprint (in any run)."""
    query = (
        select(Study.source_uri)
        .join(Run, Run.id == Study.run_id)
        .join(Model, Model.id == Run.model_id)
        .where(Model.fingerprint == fingerprint, Study.status == StudyStatus.DONE)
    )
    done = set(session.execute(query).scalars())
    return done if source_uris is None else done & set(source_uris)
