"""``heartseg report RUN --html DIR --json FILE``: a run's cohort report as a static page and a JSON summary.

One module per job: :mod:`.summary` reads the run from the record (through :mod:`db.queries` only) and
builds the JSON summary; :mod:`.figures` draws the Dice boxplots and Bland-Altman plots; :mod:`.montage`
loads a study's image and masks and draws its ED/ES overlay montage in the display orientation of
:func:`~.montage.plane_layout`; :mod:`.page` writes ``index.html`` (from ``templates/report.html.j2``), its
PNGs and ``summary.json``. (:mod:`scheduler.reports` is another thing: the rich tables the CLI prints.)

matplotlib, Jinja2 and scikit-image are imported inside the functions that need them, so importing this
package (and ``heartseg report`` without ``--html``) stays light.
"""

from scheduler.report_page.montage import ReportError, display_plane, plane_layout
from scheduler.report_page.page import write_html, write_json, write_report
from scheduler.report_page.summary import DEFAULT_WORST, ReportData, gather, summary

__all__ = [
    "DEFAULT_WORST",
    "ReportData",
    "ReportError",
    "display_plane",
    "gather",
    "plane_layout",
    "summary",
    "write_html",
    "write_json",
    "write_report",
]
