"""Idempotent writes: every row is keyed by a unique constraint and written with an upsert.

Doing a step twice (a retry, a duplicate delivery, two workers racing) leaves one row:
PostgreSQL ``INSERT ... ON CONFLICT`` and SQLite's equivalent make the check and the write
one atomic statement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Row, Table, bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.records import RecordError, index_row, member, metric_row
from db.schema import (
    FLAG_LENGTH,
    Base,
    CardiacIndex,
    FrameQualityRow,
    Mask,
    Metric,
    Model,
    QualityFlag,
    Run,
    Study,
    Worker,
)
from heartseg.enums import Frames, IndexSource, StudyStatus
from heartseg.labels import Phase, Structure


def table_of(model: type[Base]) -> Table:
    """The table an ORM class is mapped to (``__table__`` is typed as any FROM clause)."""
    return Base.metadata.tables[model.__tablename__]


def dialect_insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``table`` that can say what to do on conflict, for the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RecordError(f"database dialect {dialect!r} is not supported; use PostgreSQL or SQLite")


def upsert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           update: bool = True) -> None:
    """Insert ``rows``; where a row with the same ``keys`` exists, update it (or keep it)."""
    if not rows:
        return
    statement = dialect_insert(session, table).values(list(rows))
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
    upsert(session, table_of(Model), [{**keys, "path": path, "configuration": configuration, "folds": folds,
                                       "checkpoint_name": checkpoint_name}], list(keys), update=False)
    return session.execute(select(Model.id).filter_by(**keys)).scalar_one()


def ensure_run(session: Session, *, name: str, source_uri: str, model_id: int, frames: Frames) -> int:
    """The id of run ``name``, created if new; an existing run must use the same model.

    Raises
    ------
    RecordError
        For ``frames`` that is no ``Frames`` value, or a run of that name recorded with another model.
    """
    frames = member(Frames, frames, f"run {name!r}", "frames")
    upsert(session, table_of(Run), [{"name": name, "source_uri": source_uri, "model_id": model_id,
                                     "frames": frames}], ["name"], update=False)
    run = session.execute(select(Run).filter_by(name=name)).scalar_one()
    if run.model_id != model_id:
        raise RecordError(f"run {name!r} already exists with another model (id {run.model_id}); choose a new name")
    return run.id


def insert_new(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
               returning: Sequence[str]) -> list[Row[Any]]:
    """Insert the ``rows`` that no row of ``table`` matches on ``keys``, in one statement; keep the others.

    PostgreSQL gets one array per column and ``unnest``s them, so the statement has a parameter per
    column whatever the number of rows; SQLite gets every row, packed by SQLAlchemy into multi-row
    ``VALUES`` pages. Every row must have the same columns.

    Returns
    -------
    list[Row]
        The ``returning`` columns of the rows inserted (none for the rows kept).
    """
    if not rows:
        return []
    names = list(rows[0])
    if session.get_bind().dialect.name == "postgresql":
        arrays = [bindparam(f"{name}_values", [row[name] for row in rows], type_=postgresql.ARRAY(table.c[name].type))
                  for name in names]
        values = func.unnest(*arrays).table_valued(*names).render_derived()
        insert: postgresql.Insert | sqlite.Insert = postgresql.insert(table).from_select(names, select(*values.c))
        params: Sequence[Mapping[str, Any]] | None = None
    else:
        insert, params = dialect_insert(session, table), rows
    statement = (insert.on_conflict_do_nothing(index_elements=list(keys))
                 .returning(*(table.c[name] for name in returning)))
    return list(session.execute(statement, params))


def add_studies(session: Session, run_id: int, studies: Iterable[Mapping[str, Any]]) -> list[int]:
    """Record studies of a run as queued with one ``INSERT`` (``insert_new``); studies already in the run are kept.

    Returns
    -------
    list[int]
        The ids of all the given studies, new and kept, in ascending order.
    """
    rows = [{"run_id": run_id, "status": StudyStatus.QUEUED, "attempts": 0, **s} for s in studies]
    inserted = insert_new(session, table_of(Study), rows, ["run_id", "source_uri"], ["source_uri", "id"])
    ids: dict[str, int] = {row.source_uri: row.id for row in inserted}
    kept = {row["source_uri"] for row in rows} - ids.keys()
    if kept:  # a run submitted again: its earlier studies keep their rows and ids
        ids.update((uri, id_) for uri, id_ in session.execute(select(Study.source_uri, Study.id)
                                                              .where(Study.run_id == run_id)) if uri in kept)
    return sorted(ids.values())


def record_mask(session: Session, *, study_id: int, model_id: int, frame: int, phase: Phase, uri: str,
                sha256: str, shape: Sequence[int], spacing: Sequence[float], seg_uri: str | None = None,
                seg_sha256: str | None = None, uncertainty: float | None = None) -> None:
    """Record (or re-record) the mask of one study frame (and its DICOM SEG, for a DICOM source), with the
    segmenter's uncertainty of the frame when it gives one.

    Raises
    ------
    RecordError
        For an unknown phase, a checksum that is not 64 hex digits, a SEG URI without its checksum, or an
        uncertainty outside [0, 1].
    """
    phase = member(Phase, phase, f"study {study_id} frame {frame}", "phase")
    for name, digest in (("sha256", sha256), ("seg_sha256", seg_sha256 or "0" * 64)):
        if len(digest) != 64:
            raise RecordError(f"study {study_id} frame {frame}: {name} must be 64 hex digits, got {digest!r}")
    if (seg_uri is None) != (seg_sha256 is None):
        raise RecordError(f"study {study_id} frame {frame}: a SEG needs both its URI and its checksum")
    if uncertainty is not None and not 0.0 <= float(uncertainty) <= 1.0:  # NaN fails too
        raise RecordError(f"study {study_id} frame {frame}: uncertainty must lie in [0, 1], got {uncertainty!r}")
    upsert(session, table_of(Mask), [{
        "study_id": study_id, "model_id": model_id, "frame": frame, "phase": phase, "uri": uri,
        "sha256": sha256, "shape": ",".join(str(int(n)) for n in shape),
        "spacing_x_mm": float(spacing[0]), "spacing_y_mm": float(spacing[1]), "spacing_z_mm": float(spacing[2]),
        "seg_uri": seg_uri, "seg_sha256": seg_sha256,
        "uncertainty": None if uncertainty is None else float(uncertainty),
    }], ["study_id", "model_id", "frame"])


#: How far a fraction the segmenter computed in floating point may lie outside [0, 1] and be taken as the bound.
FRACTION_TOLERANCE = 1e-6


def _quality_value(where: str, values: Mapping[str, object], name: str, *, nullable: bool,
                   fraction: bool) -> float | None:
    """One value of a ``frame_quality`` row, checked: a finite number (or None where ``nullable``), in [0, 1] for
    a ``fraction`` (rounding within :data:`FRACTION_TOLERANCE` is clipped), else not negative."""
    value = values.get(name)
    if value is None:
        if nullable:
            return None
        raise RecordError(f"{where}: {name} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"{where}: {name} must be a finite number, got {value!r}")
    number = float(value)
    high = 1.0 if fraction else math.inf
    if not -FRACTION_TOLERANCE <= number <= high + FRACTION_TOLERANCE:
        raise RecordError(f"{where}: {name} = {number!r} is outside {'[0, 1]' if fraction else '[0, inf)'}")
    return min(max(number, 0.0), high)


def record_frame_quality(session: Session, *, study_id: int, model_id: int, frame: int, phase: Phase,
                         structures: Iterable[Mapping[str, object]]) -> int:
    """Record (or re-record) what the segmenter measured of one study frame's quality, one ``frame_quality`` row
    per structure given; the frame's rows of structures not given are removed, so that the record holds what the
    last segmentation measured (none given: the frame has no rows). Validated first: nothing is written on error.

    Parameters
    ----------
    structures
        Per structure: ``structure`` (a ``Structure`` or its name), ``predicted_dice`` (None without a
        calibration), ``self_dice``, ``entropy`` (None when undefined) and ``fold_agreement`` (None with one
        fold), each in [0, 1]; ``n_folds`` (at least 1) and ``volume_ml`` (not negative).

    Returns
    -------
    int
        The number of rows recorded.

    Raises
    ------
    RecordError
        For an unknown phase or structure, a structure given twice, a missing or non-finite value, a value
        outside its range, or a number of folds below 1.
    """
    where = f"study {study_id} frame {frame}"
    phase = member(Phase, phase, where, "phase")
    rows: list[dict[str, object]] = []
    for values in structures:
        structure = member(Structure, values.get("structure"), where, "structure")
        label = f"{where} {structure.value} quality"
        if any(row["structure"] is structure for row in rows):
            raise RecordError(f"{label}: given more than once")
        n_folds = values.get("n_folds")
        if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1:
            raise RecordError(f"{label}: n_folds must be a whole number of at least 1, got {n_folds!r}")
        rows.append({
            "study_id": study_id, "model_id": model_id, "frame": frame, "phase": phase, "structure": structure,
            "n_folds": n_folds,
            **{name: _quality_value(label, values, name, nullable=nullable, fraction=fraction)
               for name, nullable, fraction in (("predicted_dice", True, True), ("self_dice", False, True),
                                                ("entropy", True, True), ("fold_agreement", True, True),
                                                ("volume_ml", False, False))},
        })
    session.execute(delete(FrameQualityRow).where(
        FrameQualityRow.study_id == study_id, FrameQualityRow.model_id == model_id, FrameQualityRow.frame == frame,
        FrameQualityRow.structure.not_in([row["structure"] for row in rows])))
    upsert(session, table_of(FrameQualityRow), rows, ["study_id", "model_id", "frame", "structure"])
    return len(rows)


def record_metrics(session: Session, *, study_id: int, model_id: int, frame: int, phase: Phase,
                   metrics: Mapping[Structure, Mapping[str, float]]) -> None:
    """Record one frame's metrics, one row per structure (validated first: nothing is written on error).

    Parameters
    ----------
    metrics
        ``StructureMetrics.as_dict()`` of each structure compared.

    Raises
    ------
    RecordError
        For an unknown phase or structure, or metric values that ``metric_row`` refuses.
    """
    where = f"study {study_id} frame {frame}"
    phase = member(Phase, phase, where, "phase")
    rows = [{"study_id": study_id, "model_id": model_id, "frame": frame, "phase": phase,
             **metric_row(where, structure, values)} for structure, values in metrics.items()]
    upsert(session, table_of(Metric), rows, ["study_id", "model_id", "frame", "structure"])


def record_indices(session: Session, *, study_id: int, model_id: int, source: IndexSource,
                   indices: Mapping[str, object]) -> None:
    """Record a study's cardiac indices from predicted or reference masks.

    Parameters
    ----------
    indices
        ``CardiacIndices.as_dict()``: the columns of ``cardiac_indices``, ``phase_source`` a ``PhaseSource``.

    Raises
    ------
    RecordError
        For an unknown source or phase source, or values that ``index_row`` refuses.
    """
    source = member(IndexSource, source, f"study {study_id}", "index source")
    row = index_row(f"study {study_id} {source.value} indices", indices)
    upsert(session, table_of(CardiacIndex), [{"study_id": study_id, "model_id": model_id, "source": source, **row}],
           ["study_id", "model_id", "source"])


def record_qc_flags(session: Session, *, study_id: int, model_id: int,
                    flags: Iterable[Mapping[str, object]]) -> int:
    """Replace a study's QC flags for a model with ``flags`` (none: the study has none), in the session's
    transaction: a re-delivered evaluation leaves the same rows. Validated first: nothing is written on error.

    Parameters
    ----------
    flags
        ``QcFlag.as_row()`` of each flag: ``flag``, ``frame`` (None for the study), ``structure`` (None or a
        ``Structure``), ``value``, ``threshold``, ``severity`` (1 or 2) and ``reason``.

    Returns
    -------
    int
        The number of flags recorded.

    Raises
    ------
    RecordError
        For an unknown structure, a flag name that is empty or longer than ``FLAG_LENGTH``, a severity other
        than 1 or 2, a value or threshold that is not a finite number, or an empty reason.
    """
    rows = []
    for flag in flags:
        where = f"study {study_id} QC flag {flag.get('flag')!r}"
        name = flag.get("flag")
        if not isinstance(name, str) or not 0 < len(name) <= FLAG_LENGTH:
            raise RecordError(f"{where}: the flag name must be 1 to {FLAG_LENGTH} characters")
        structure = flag.get("structure")
        numbers = {}
        for column in ("value", "threshold"):
            number = flag.get(column)
            if not isinstance(number, int | float) or number != number or number in (float("inf"), float("-inf")):
                raise RecordError(f"{where}: {column} must be a finite number, got {number!r}")
            numbers[column] = float(number)
        severity, reason, frame = flag.get("severity"), flag.get("reason"), flag.get("frame")
        if severity not in (1, 2):
            raise RecordError(f"{where}: severity must be 1 (warning) or 2 (error), got {severity!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise RecordError(f"{where}: the reason is empty")
        if frame is not None and not isinstance(frame, int):
            raise RecordError(f"{where}: frame must be a frame number or None, got {frame!r}")
        rows.append({"study_id": study_id, "model_id": model_id, "frame": frame, "flag": name, "severity": severity,
                     "reason": reason, "structure": None if structure is None else member(Structure, structure, where,
                                                                                           "structure"), **numbers})
    session.execute(delete(QualityFlag).where(QualityFlag.study_id == study_id, QualityFlag.model_id == model_id))
    if rows:
        session.execute(insert(QualityFlag), rows)
    return len(rows)


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


def record_heartbeat(session: Session, worker: Mapping[str, Any]) -> None:
    """Write (or refresh) a worker's row of ``workers``: ``name`` is the key, the other columns replace its own."""
    upsert(session, table_of(Worker), [dict(worker)], ["name"])
