"""Rich tables for the CLI."""

from __future__ import annotations

import math

from rich.table import Table

from scheduler.reference_indices import GroupSummary
from workers.evaluation import StructureSummary


def _num(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def structure_table(summaries: list[StructureSummary], title: str) -> Table:
    """Per-structure means of an evaluation."""
    table = Table(title=title)
    for column in ("structure", "n", "Dice", "IoU", "HD95 mm", "ASSD mm", "NaN Dice", "inf dist."):
        table.add_column(column, justify="left" if column == "structure" else "right")
    for s in summaries:
        table.add_row(
            s.structure.value,
            str(s.n),
            _num(s.dice_mean, 4),
            _num(s.iou_mean, 4),
            _num(s.hd95_mean_mm, 2),
            _num(s.assd_mean_mm, 2),
            str(s.n_nan_dice),
            str(s.n_inf_distance),
        )
    finite = [s.dice_mean for s in summaries if math.isfinite(s.dice_mean)]
    if finite:
        table.caption = f"mean Dice over structures: {sum(finite) / len(finite):.4f}"
    return table


def group_table(summaries: list[GroupSummary], title: str) -> Table:
    """Mean (SD) of the main cardiac indices per pathology group."""
    table = Table(title=title)
    for column in ("group", "n", "LV EF %", "LV EDV ml", "RV EF %", "RV EDV ml", "LV mass g"):
        table.add_column(column, justify="left" if column == "group" else "right")

    def cell(pair: tuple[float, float]) -> str:
        return f"{_num(pair[0], 1)} ({_num(pair[1], 1)})"

    for s in summaries:
        table.add_row(s.group, str(s.n), cell(s.lv_ef), cell(s.lv_edv), cell(s.rv_ef), cell(s.rv_edv),
                      cell(s.myo_mass))
    table.caption = "mean (SD) from the reference masks at the ED and ES frames stated in Info.cfg"
    return table


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _num(value, 3)
    return str(value)


def rows_table(title: str, rows: list[dict[str, object]]) -> Table:
    table = Table(title=title, min_width=len(title) + 4)  # keep the title on one line
    if not rows:
        table.add_column("(none)")
        return table
    for column in rows[0]:
        table.add_column(column, justify="left" if isinstance(rows[0][column], str) else "right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    return table


#: The most failure reasons ``heartseg report`` prints, the most frequent first (a reason that names its file is one
#: study's, so a large cohort can have thousands); the caption counts the others.
FAILURE_ROWS = 20


def record_tables(report: dict[str, list[dict[str, object]]], run: str) -> list[Table]:
    """The tables of ``heartseg report`` from :func:`db.queries.run_report` (failure reasons as ordered there, the
    first :data:`FAILURE_ROWS`)."""
    failures = report["failures"]
    failure_table = rows_table(f"{run}: failure reasons", failures[:FAILURE_ROWS])
    if len(failures) > FAILURE_ROWS:
        rest = failures[FAILURE_ROWS:]
        studies = sum(int(str(row["n_studies"])) for row in rest)
        failure_table.caption = (f"and {len(rest)} more reasons ({studies} studies): view run_failures, "
                                 "or heartseg report --json")
    return [
        rows_table(f"{run}: studies by status", report["status"]),
        rows_table(f"{run}: Dice and HD95 (mm) by pathology group and structure", report["metrics"]),
        rows_table(f"{run}: cardiac indices, predicted vs reference (Bland-Altman)", report["agreement"]),
        failure_table,
    ]
