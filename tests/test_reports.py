"""The CLI's tables of a run's report."""

from __future__ import annotations

from rich.console import Console

from scheduler.reports import FAILURE_ROWS, record_tables


def test_report_prints_the_most_frequent_failure_reasons_and_counts_the_rest() -> None:
    failures = [{"error": f"p{i:04d}.nii.gz: cannot read the file", "n_studies": 3 if i == 0 else 1}
                for i in range(FAILURE_ROWS + 30)]
    report: dict[str, list[dict[str, object]]] = {"status": [{"status": "failed", "n_studies": FAILURE_ROWS + 32}],
                                                  "metrics": [], "agreement": [], "failures": list(failures)}
    console = Console(record=True, width=200)
    for table in record_tables(report, "big"):
        console.print(table)
    text = console.export_text()
    shown = [f["error"] for f in failures[:FAILURE_ROWS]]
    assert all(error in text for error in shown)
    assert not any(f["error"] in text for f in failures[FAILURE_ROWS:])
    assert "and 30 more reasons (30 studies): view run_failures, or heartseg report --json" in " ".join(text.split())
    report["failures"] = failures[:FAILURE_ROWS]
    assert "more reasons" not in "".join(str(t.caption) for t in record_tables(report, "small"))
