"""A run's report as data: read from the record (:func:`gather`) and summarised as a JSON-safe document
(:func:`summary`, what ``--json`` writes and what the page is rendered from).

The data come from the record through :mod:`db.queries` only (the cohort views ``run_status_counts``,
``cohort_metric_stats``, ``run_index_agreement``, ``run_failures``, ``run_qc``, the long rows behind
them, and ``frame_quality``'s predicted Dice beside the actual one); no SQL is written here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from db import queries
from heartseg.labels import STRUCTURES, Phase
from scheduler.viewer.links import ViewerLinks, add_viewer_links

#: How many studies with the lowest mean Dice get an overlay montage besides the flagged ones.
DEFAULT_WORST = 5


#: The long rows of a run that :class:`ReportData` reads when first used: ``{attribute: reader}``.
LONG_ROWS: dict[str, Callable[[Engine, str], list[dict[str, Any]]]] = {
    "metric_rows": queries.run_metric_rows,
    "index_pairs": queries.run_index_pairs,
    "masks": queries.run_study_masks,
    "quality_rows": queries.run_quality_rows,
}


@dataclass
class ReportData:
    """Everything the report shows of one run, as read from the record.

    The long rows (``metric_rows``, ``index_pairs``, ``masks``, ``quality_rows``: one per study, frame or
    structure, hundreds of thousands in a large cohort) are read from ``engine`` when first used: the page's
    figures need them, the JSON summary only its aggregates, which PostgreSQL computes (``aggregates``; on SQLite
    the summary computes them from the rows). Rows given to the constructor are used as they are.
    """

    run: str
    status: list[dict[str, Any]]
    group_stats: list[dict[str, Any]]
    agreement: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    failed_studies: list[dict[str, Any]]
    qc: list[dict[str, Any]]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The long rows read so far (or given), by attribute (:data:`LONG_ROWS`)."""
    engine: Engine | None = None
    aggregates: dict[str, list[dict[str, Any]]] | None = None
    """From PostgreSQL: ``by_structure``, ``by_phase`` (as :func:`_stats`), ``worst`` (:func:`worst_studies`
    less the masks), ``predicted_quality`` (:func:`predicted_quality`) and ``studies_by_predicted_quality``."""
    worst_n: int = DEFAULT_WORST
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def _long(self, name: str) -> list[dict[str, Any]]:
        if name not in self.rows:
            if self.engine is None:
                raise ValueError(f"report data of run {self.run!r} has no {name} and no record to read them from")
            self.rows[name] = LONG_ROWS[name](self.engine, self.run)
        return self.rows[name]

    @property
    def metric_rows(self) -> list[dict[str, Any]]:
        """Per study, frame and structure: Dice and HD95 (:func:`db.queries.run_metric_rows`)."""
        return self._long("metric_rows")

    @property
    def index_pairs(self) -> list[dict[str, Any]]:
        """Per study with both: predicted and reference indices (:func:`db.queries.run_index_pairs`)."""
        return self._long("index_pairs")

    @property
    def masks(self) -> list[dict[str, Any]]:
        """The studies' ED and ES masks (:func:`db.queries.run_study_masks`)."""
        return self._long("masks")

    @property
    def quality_rows(self) -> list[dict[str, Any]]:
        """Per frame and structure with a ``frame_quality`` row: predicted and actual Dice
        (:func:`db.queries.run_quality_rows`)."""
        return self._long("quality_rows")


def gather(engine: Engine, run: str, worst_n: int = DEFAULT_WORST) -> ReportData:
    """Read run ``run``'s report from the record (:class:`~db.queries.UnknownRunError` if there is none): the
    views, the failed and flagged studies, and on PostgreSQL the summary's aggregates; the long rows are read when
    first used (:class:`ReportData`)."""
    report = queries.run_report(engine, run)
    aggregates = None
    if engine.dialect.name == "postgresql":
        stats = queries.run_metric_stats(engine, run)
        columns = ("structure", "phase", "measure", "n", "mean", "sd", "median")
        aggregates = {
            "by_structure": _sorted_stats([{k: r[k] for k in columns if k != "phase"} for r in stats
                                           if r["all_phases"]], ("structure",)),
            "by_phase": _sorted_stats([{k: r[k] for k in columns} for r in stats if not r["all_phases"]],
                                      ("structure", "phase")),
            "worst": [{**r, "study_id": int(r["study_id"]), "mean_dice": float(r["mean_dice"])}
                      for r in queries.run_lowest_mean_dice(engine, run, worst_n)],
            "predicted_quality": _sorted_quality(queries.run_predicted_quality(engine, run)),
            "studies_by_predicted_quality": sorted(
                ({**r, "study_id": int(r["study_id"]), "min_predicted_dice": float(r["min_predicted_dice"]),
                  "structure": str(r["structure"]), "phase": str(r["phase"]), "frame": int(r["frame"])}
                 for r in queries.run_lowest_predicted_dice(engine, run)),
                key=lambda s: (s["min_predicted_dice"], str(s["patient_id"]), s["study_id"])),
        }
    return ReportData(
        run=run,
        status=report["status"],
        group_stats=report["metrics"],
        agreement=report["agreement"],
        failures=report["failures"],
        failed_studies=queries.run_failed_studies(engine, run),
        qc=queries.run_qc(engine, run),
        engine=engine,
        aggregates=aggregates,
        worst_n=worst_n,
    )


def _clean(value: Any) -> Any:
    """JSON-safe: Decimal as float, NaN and infinity as null, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample SD (null below 2 values) and median, as ``cohort_metric_stats`` defines them."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "median": statistics.median(values) if values else None,
    }


def _stats(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per combination of ``keys`` and measure (``dice``, ``hd95_mm``): :func:`describe` of the values."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for row in rows:
        for measure in ("dice", "hd95_mm"):
            if row[measure] is not None:
                groups.setdefault((*(row[k] for k in keys), measure), []).append(float(row[measure]))
    return [{**dict(zip((*keys, "measure"), key, strict=True)), **describe(groups[key])}
            for key in sorted(groups, key=_stats_order)]


def _stats_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The order of :func:`_stats`' rows by ``(*keys, measure)``: measure, then structures in label order, then
    names."""
    order = {s.value: i for i, s in enumerate(STRUCTURES)}
    return (key[-1], *((order.get(str(k), len(order)), str(k)) for k in key[:-1]))


def _sorted_stats(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of :func:`db.queries.run_metric_stats` in :func:`_stats`' order, with its types."""
    for row in rows:
        row.update(n=int(row["n"]), **{k: None if row[k] is None else float(row[k]) for k in ("mean", "sd",
                                                                                             "median")})
    return sorted(rows, key=lambda r: _stats_order((*(r[k] for k in keys), r["measure"])))


def study_mean_dice(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per study with a defined Dice: patient, group and the mean Dice over its frames and structures."""
    studies: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["dice"] is None:
            continue
        entry = studies.setdefault(int(row["study_id"]), {"study_id": int(row["study_id"]),
                                                         "patient_id": row["patient_id"],
                                                         "pathology_group": row["pathology_group"], "dice": []})
        entry["dice"].append(float(row["dice"]))
    return {k: {**{n: v for n, v in e.items() if n != "dice"}, "mean_dice": statistics.fmean(e["dice"])}
            for k, e in studies.items()}


def flagged_studies(qc: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``run_qc`` with at least one flag, worst first: by severity (the sum of the flags'
    severities), then number of flags; ``reasons`` is ``flags`` split at ``'; '``."""
    rows = [dict(r) for r in qc if int(r["n_flags"] or 0) > 0]
    rows.sort(key=lambda r: (-float(r["severity"] or 0), -int(r["n_flags"]), str(r["patient_id"]),
                             int(r["study_id"])))
    for row in rows:
        row["reasons"] = [part.strip() for part in str(row["flags"] or "").split("; ") if part.strip()]
    return rows


def masks_by_study(masks: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per study: its source and ``{phase: {"frame", "uri"}}`` of its ED and ES masks."""
    out: dict[int, dict[str, Any]] = {}
    for row in masks:
        entry = out.setdefault(int(row["study_id"]), {"source_uri": row["source_uri"], "masks": {}})
        entry["masks"][str(row["phase"])] = {"frame": int(row["frame"]), "uri": row["uri"]}
    return out


def worst_studies(data: ReportData) -> list[dict[str, Any]]:
    """The ``worst_n`` studies with the lowest mean Dice, with their mask URIs."""
    masks = masks_by_study(data.masks)
    if data.aggregates is not None:
        ranked = data.aggregates["worst"]
    else:
        ranked = sorted(study_mean_dice(data.metric_rows).values(), key=lambda s: (s["mean_dice"], s["patient_id"]))
    return [{**s, "masks": masks.get(s["study_id"], {}).get("masks", {})} for s in ranked[:data.worst_n]]


#: How many studies the page lists by their lowest predicted Dice.
LOWEST_PREDICTED = 10


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation of paired values; None below two pairs or when either side is constant."""
    try:
        return statistics.correlation(xs, ys) if len(xs) > 1 else None
    except statistics.StatisticsError:  # a constant side
        return None


def predicted_quality(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per structure and phase with a predicted Dice: ``n`` frames and their ``mean_predicted_dice``; and over the
    ``n_reference`` of them whose Dice against a reference is defined, the ``mean_abs_error`` of the predicted
    against the actual Dice and their Pearson ``correlation`` (None where there are too few)."""
    groups: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    for row in rows:
        if row["predicted_dice"] is not None:
            groups.setdefault((str(row["structure"]), str(row["phase"])), []).append(
                (float(row["predicted_dice"]), None if row["dice"] is None else float(row["dice"])))
    structures = {s.value: i for i, s in enumerate(STRUCTURES)}
    phases = {p.value: i for i, p in enumerate(Phase)}
    out = []
    for structure, phase in sorted(groups, key=lambda k: (structures.get(k[0], len(structures)), k[0],
                                                          phases.get(k[1], len(phases)), k[1])):
        values = groups[(structure, phase)]
        pairs = [(p, a) for p, a in values if a is not None]
        out.append({
            "structure": structure, "phase": phase, "n": len(values),
            "mean_predicted_dice": statistics.fmean(p for p, _ in values),
            "n_reference": len(pairs),
            "mean_abs_error": statistics.fmean(abs(p - a) for p, a in pairs) if pairs else None,
            "correlation": correlation([p for p, _ in pairs], [a for _, a in pairs]),
        })
    return out


def _sorted_quality(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`db.queries.run_predicted_quality` in :func:`predicted_quality`'s order, with its types."""
    structures = {s.value: i for i, s in enumerate(STRUCTURES)}
    phases = {p.value: i for i, p in enumerate(Phase)}
    out = [{"structure": str(r["structure"]), "phase": str(r["phase"]), "n": int(r["n"]),
            "mean_predicted_dice": float(r["mean_predicted_dice"]), "n_reference": int(r["n_reference"]),
            "mean_abs_error": None if r["mean_abs_error"] is None else float(r["mean_abs_error"]),
            "correlation": None if r["correlation"] is None else float(r["correlation"])} for r in rows]
    return sorted(out, key=lambda r: (structures.get(r["structure"], len(structures)), r["structure"],
                                      phases.get(r["phase"], len(phases)), r["phase"]))


def studies_by_predicted_quality(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every study with a predicted Dice, by its lowest one (ascending, then by patient): where it is (frame,
    phase, structure) and the actual Dice there (None without a reference)."""
    lowest: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["predicted_dice"] is None:
            continue
        study_id = int(row["study_id"])
        if study_id not in lowest or float(row["predicted_dice"]) < lowest[study_id]["min_predicted_dice"]:
            lowest[study_id] = {"study_id": study_id, "patient_id": row["patient_id"],
                                "pathology_group": row["pathology_group"],
                                "min_predicted_dice": float(row["predicted_dice"]), "structure": str(row["structure"]),
                                "phase": str(row["phase"]), "frame": int(row["frame"]), "dice": row["dice"]}
    return sorted(lowest.values(), key=lambda s: (s["min_predicted_dice"], str(s["patient_id"]), s["study_id"]))


def summary(data: ReportData, links: ViewerLinks | None = None) -> dict[str, Any]:
    """The machine-readable summary of the run (what ``--json`` writes); top-level keys:

    ``run``, ``generated_at``, ``counts`` (``total``, ``by_status``, ``flagged``), ``statistics``
    (``by_structure``, ``by_phase``, ``by_group``: n, mean, sd, median of Dice and HD95), ``agreement``
    (per index: n, mean_pred, mean_ref, bias, sd_diff, loa_lower, loa_upper), ``failures`` (``by_reason``,
    ``studies``), ``flags`` (flagged studies, worst first), ``worst`` (lowest mean Dice, with mask URIs),
    ``quality`` (the segmenter's predicted Dice: ``by_phase``, per structure and phase, from
    :func:`predicted_quality`; ``studies_by_predicted_quality``, from :func:`studies_by_predicted_quality`).
    With ``links``, ``viewer`` (the studies in the viewer's PACS, flagged first) and a ``viewer_url`` in each
    study of ``flags``, ``worst`` and ``failures.studies`` (:func:`scheduler.viewer.links.add_viewer_links`).
    """
    flags = flagged_studies(data.qc)
    aggregates = data.aggregates
    by_status = {str(r["status"]): int(r["n_studies"]) for r in data.status}
    document: dict[str, Any] = _clean({
        "run": data.run,
        "generated_at": data.generated_at,
        "counts": {"total": sum(by_status.values()), "by_status": by_status, "flagged": len(flags)},
        "statistics": {
            "by_structure": (aggregates["by_structure"] if aggregates is not None
                             else _stats(data.metric_rows, ("structure",))),
            "by_phase": (aggregates["by_phase"] if aggregates is not None
                         else _stats(data.metric_rows, ("structure", "phase"))),
            "by_group": [dict(r) for r in data.group_stats],
        },
        "agreement": {str(r["index_name"]): {k: v for k, v in r.items() if k != "index_name"}
                      for r in data.agreement},
        "failures": {"by_reason": [dict(r) for r in data.failures],
                     "studies": [dict(r) for r in data.failed_studies]},
        "flags": [{k: r[k] for k in ("study_id", "patient_id", "pathology_group", "status", "n_flags", "severity",
                                     "flags", "reasons")} for r in flags],
        "worst": worst_studies(data),
        "quality": ({"by_phase": aggregates["predicted_quality"],
                     "studies_by_predicted_quality": aggregates["studies_by_predicted_quality"]}
                    if aggregates is not None else
                    {"by_phase": predicted_quality(data.quality_rows),
                     "studies_by_predicted_quality": studies_by_predicted_quality(data.quality_rows)}),
    })
    if links is not None:
        add_viewer_links(document, links, data.masks, data.failed_studies)
    return document
