"""The report's files: ``index.html`` with its PNGs beside it, and ``summary.json``; and
:func:`write_report`, what ``heartseg report RUN --html DIR --json FILE`` runs.

The JSON summary is built first; the page is rendered from that same summary (one Jinja2 template,
``scheduler/report_page/templates/report.html.j2``), so the two never disagree. Jinja2 is imported inside
:func:`render_page`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from heartseg.labels import STRUCTURES
from heartseg.settings import Settings
from scheduler.report_page.figures import QUALITY_FIGURE, agreement_figures, dice_figures, quality_figures
from scheduler.report_page.montage import draw_montages, montage_studies
from scheduler.report_page.summary import DEFAULT_WORST, LOWEST_PREDICTED, ReportData, gather, summary
from scheduler.viewer.links import ViewerLinks

#: The figures a page writes beside it (removed first, so none of an earlier report's stays).
FIGURE_PATTERNS = ("dice_by_*.png", "bland_altman_*.png", "montage_study*.png", QUALITY_FIGURE)


def write_json(document: Mapping[str, Any], path: Path) -> Path:
    """Write the summary as indented JSON (strict: no NaN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _format_number(value: Any, digits: int = 3) -> str:
    """The template's ``num`` filter: ``-`` for None, floats to ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_page(document: Mapping[str, Any], figures: Mapping[str, list[dict[str, str]]],
                montages: list[dict[str, Any]]) -> str:
    """The HTML of the page, from ``templates/report.html.j2``."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=PackageLoader("scheduler.report_page", "templates"),
                              autoescape=select_autoescape(), undefined=StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)
    environment.filters["num"] = _format_number
    template = environment.get_template("report.html.j2")
    viewer = document.get("viewer") or {"url": None, "studies": []}
    viewer_urls = {entry["study_id"]: entry["viewer_url"] for entry in viewer["studies"]}
    return template.render(report=document, figures=figures, montages=montages, structures=STRUCTURES,
                           lowest_predicted=LOWEST_PREDICTED, viewer=viewer, viewer_urls=viewer_urls)


def write_html(data: ReportData, settings: Settings, folder: Path,
               document: Mapping[str, Any] | None = None) -> Path:
    """Write ``folder/index.html`` and its PNGs; returns the page's path."""
    document = summary(data) if document is None else document
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in FIGURE_PATTERNS:
        for stale in folder.glob(pattern):
            stale.unlink()
    figures = {"dice": dice_figures(data.metric_rows, folder), "agreement": agreement_figures(data, folder),
               "quality": quality_figures(data.quality_rows, folder)}
    montages = montage_studies(document, data)
    draw_montages(settings, montages, folder)
    page = folder / "index.html"
    page.write_text(render_page(document, figures, montages), encoding="utf-8")
    return page


def write_report(engine: Engine, settings: Settings, run: str, *, html: Path | None = None,
                 json_path: Path | None = None, worst_n: int = DEFAULT_WORST) -> list[Path]:
    """``heartseg report RUN --html DIR --json FILE``: the files written."""
    data = gather(engine, run, worst_n)
    document = summary(data, ViewerLinks.from_settings(settings))
    written = []
    if json_path is not None:
        written.append(write_json(document, json_path))
    if html is not None:
        written.append(write_html(data, settings, html, document))
    return written
