"""The report's charts: Dice boxplots, Bland-Altman plots of the cardiac indices and the predicted against
the actual Dice, as PNG files.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state); matplotlib is imported
inside the functions that draw, so importing this module stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heartseg.labels import STRUCTURES, Structure
from scheduler.report_page.summary import ReportData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The Bland-Altman plots of the page: index column, label, unit.
AGREEMENT_PLOTS = (("lv_ef_pct", "LVEF", "%"), ("rv_ef_pct", "RVEF", "%"), ("lv_edv_ml", "LVEDV", "ml"),
                   ("myo_mass_g", "LV mass", "g"))

#: Structure colours, in the boxplots and as contours on the grey image (those of the DICOM SEGs too).
COLOURS = {structure: structure.colour for structure in Structure}


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches at 100 dpi, on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path) -> str:
    """Write ``figure`` to ``path`` as PNG; returns the file's name (as the page links it)."""
    figure.savefig(path, format="png")
    return path.name


def _boxplot(path: Path, title: str, boxes: Sequence[tuple[str, list[float], str]]) -> str:
    """One box per ``(label, values, colour)``; returns the PNG's file name."""
    figure = new_figure(max(4.0, 0.55 * len(boxes) + 1.5), 3.6)
    axes = figure.add_subplot()
    parts = axes.boxplot([values for _, values, _ in boxes], patch_artist=True, widths=0.6)
    for patch, (_, _, colour) in zip(parts["boxes"], boxes, strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.6)
    axes.set_xticks(range(1, len(boxes) + 1), [label for label, _, _ in boxes], rotation=45 if len(boxes) > 6 else 0,
                    ha="right" if len(boxes) > 6 else "center")
    axes.set_ylabel("Dice")
    axes.set_ylim(min(0.0, *(min(v) for _, v, _ in boxes)) - 0.02, 1.02)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    return save_png(figure, path)


def dice_figures(rows: Sequence[Mapping[str, Any]], folder: Path) -> list[dict[str, str]]:
    """Dice boxplots by structure, by structure and phase, by group and structure (none without references)."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        if row["dice"] is not None:
            values.setdefault((str(row["structure"]), str(row["phase"]), str(row["pathology_group"])),
                              []).append(float(row["dice"]))
    if not values:
        return []

    def pooled(structure: Structure, phase: str | None = None, group: str | None = None) -> list[float]:
        return [v for (s, p, g), vs in values.items() for v in vs
                if s == structure.value and phase in (None, p) and group in (None, g)]

    phases = sorted({p for _, p, _ in values}, key=lambda p: (p not in ("ED", "ES"), p))
    groups = sorted({g for _, _, g in values})
    specs = [
        ("dice_by_structure.png", "Dice by structure", [(s.value, pooled(s), COLOURS[s]) for s in STRUCTURES]),
        ("dice_by_phase.png", "Dice by structure and phase",
         [(f"{s.value} {p}", pooled(s, phase=p), COLOURS[s]) for p in phases for s in STRUCTURES]),
        ("dice_by_group.png", "Dice by pathology group and structure",
         [(f"{g} {s.value}", pooled(s, group=g), COLOURS[s]) for g in groups for s in STRUCTURES]),
    ]
    return [{"file": _boxplot(folder / name, title, [b for b in boxes if b[1]]), "caption": title}
            for name, title, boxes in specs]


def _bland_altman(path: Path, label: str, unit: str, pairs: list[tuple[float, float]],
                  agreement: Mapping[str, Any] | None) -> str:
    """Difference (pred - ref) against the mean of the two, with the bias and 95 % limits of the view."""
    figure = new_figure(4.6, 3.6)
    axes = figure.add_subplot()
    means = [(p + r) / 2 for p, r in pairs]
    diffs = [p - r for p, r in pairs]
    axes.scatter(means, diffs, s=18, color="#1f4e79", alpha=0.8)
    lines = (("bias", "bias", "-"), ("loa_upper", "+1.96 SD", "--"), ("loa_lower", "-1.96 SD", "--"))
    for key, name, style in lines:
        value = None if agreement is None else agreement.get(key)
        if value is not None and math.isfinite(float(value)):
            axes.axhline(float(value), color="#c0392b" if key == "bias" else "#7f8c8d", linestyle=style,
                         label=f"{name}: {float(value):.2f} {unit}")
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.set_xlabel(f"mean of predicted and reference {label} ({unit})")
    axes.set_ylabel(f"predicted - reference ({unit})")
    axes.set_title(f"{label}: Bland-Altman (n = {len(pairs)})")
    axes.legend(fontsize=7, loc="best")
    axes.grid(alpha=0.3)
    return save_png(figure, path)


def agreement_figures(data: ReportData, folder: Path) -> list[dict[str, str]]:
    """Bland-Altman plots of LVEF, RVEF, LVEDV and LV mass (those with at least one pair)."""
    by_index = {str(r["index_name"]): r for r in data.agreement}
    figures = []
    for index, label, unit in AGREEMENT_PLOTS:
        pairs = [(float(r[f"pred_{index}"]), float(r[f"ref_{index}"])) for r in data.index_pairs
                 if r[f"pred_{index}"] is not None and r[f"ref_{index}"] is not None]
        if pairs:
            name = _bland_altman(folder / f"bland_altman_{index}.png", label, unit, pairs, by_index.get(index))
            figures.append({"file": name, "caption": f"{label} ({unit}), predicted vs reference masks"})
    return figures


#: The scatter of predicted against actual Dice (``quality_figures``).
QUALITY_FIGURE = "predicted_vs_actual_dice.png"


def quality_figures(rows: Sequence[Mapping[str, Any]], folder: Path) -> list[dict[str, str]]:
    """The segmenter's predicted Dice against the Dice with the reference, one point per frame and structure,
    coloured by structure, with the identity line (none without a pair of both)."""
    points: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["predicted_dice"] is not None and row["dice"] is not None:
            points.setdefault(str(row["structure"]), []).append((float(row["dice"]), float(row["predicted_dice"])))
    if not points:
        return []
    figure = new_figure(4.6, 4.2)
    axes = figure.add_subplot()
    axes.plot([0.0, 1.0], [0.0, 1.0], color="#7f8c8d", linestyle="--", linewidth=1.0, label="identity")
    for structure in STRUCTURES:
        pairs = points.get(structure.value, [])
        if pairs:
            axes.scatter([a for a, _ in pairs], [p for _, p in pairs], s=18, color=COLOURS[structure], alpha=0.8,
                         edgecolors="#333333", linewidths=0.4, label=f"{structure.value} (n = {len(pairs)})")
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_aspect("equal")
    axes.set_xlabel("Dice with the reference")
    axes.set_ylabel("predicted Dice")
    axes.set_title("Predicted against actual Dice")
    axes.legend(fontsize=7, loc="upper left")
    axes.grid(alpha=0.3)
    caption = "Predicted against actual Dice, one point per frame and structure"
    return [{"file": save_png(figure, folder / QUALITY_FIGURE), "caption": caption}]
