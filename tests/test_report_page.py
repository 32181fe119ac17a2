"""``heartseg report RUN --html DIR --json FILE``: the JSON summary against the record's views, the page in
a real headless Chromium (every image decoded, no console error), and the command through its CLI.

A small cohort goes through both stages as in test_pipeline_stages: three phantoms segmented by an oracle
(phantom002 with its labels shifted, so that Dice and the indices differ from the reference; phantom003
without its RV at ES, which the QC flags) and a study whose image is corrupt (failed). The oracle, pipelined,
hands each frame over with quality signals whose predicted Dice is 0.95 times the mask's actual Dice (0 for a
structure it left out), as a calibrated segmenter that slightly underestimates would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from db import queries
from db.session import open_record
from heartseg.labels import Structure
from heartseg.settings import Settings
from heartseg.storage import LocalStore
from heartseg.studies import open_study
from scheduler.report_page import display_plane, write_report
from scheduler.report_page.figures import QUALITY_FIGURE
from scheduler.submit import submit_sources
from tests.phantom_cache import write_cohort
from tests.test_models import fake_model
from tests.test_pipeline_stages import Oracle
from workers.pipeline import ModelInfo, OnLabels, evaluate_stage, segment_stage
from workers.quality import FrameQuality, StructureQuality
from workers.stage_context import StageContext

RUN = "report-run"
#: The oracle's predicted Dice is this times the actual one.
PREDICTED_FACTOR = 0.95
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class FlawedOracle(Oracle):
    """The reference labels, but shifted by 3 voxels along x for the frames of one study, and without
    the RV in the ES frame of another (a QC flag: a structure missing)."""

    def __init__(self, folders: list[Path], shifted: Path, no_es_rv: Path) -> None:
        super().__init__(folders)
        self.shifted = [image for image, _ in Oracle([shifted]).references]
        study = open_study(no_es_rv, cine=False)
        self.no_rv = study.frame(study.es).image if study.es is not None else None

    def __call__(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        labels = super().__call__(image, spacing)
        if any(np.array_equal(image, known) for known in self.shifted):
            return np.roll(labels, 3, axis=0)
        if self.no_rv is not None and np.array_equal(image, self.no_rv):
            return np.where(labels == Structure.RV.label, 0, labels).astype(np.uint8)
        return labels

    def quality(self, image: np.ndarray, spacing: Sequence[float], labels: np.ndarray) -> FrameQuality:
        """Signals of one fold whose predicted Dice is :data:`PREDICTED_FACTOR` times the actual Dice."""
        reference = Oracle.__call__(self, image, spacing)
        voxel_ml = float(np.prod(spacing)) / 1000
        structures = []
        for structure in Structure:
            mine, theirs = labels == structure.label, reference == structure.label
            dice = 2 * np.count_nonzero(mine & theirs) / max(1, np.count_nonzero(mine) + np.count_nonzero(theirs))
            structures.append(StructureQuality(structure, (float(dice),), (0.05 if mine.any() else None,), None,
                                               np.count_nonzero(mine) * voxel_ml, PREDICTED_FACTOR * dice))
        return FrameQuality(uncertainty=0.01, n_folds=1, structures=tuple(structures))

    def segment_frames(self, images: Iterable[np.ndarray], spacing: Sequence[float],
                       on_labels: OnLabels) -> list[np.ndarray]:
        results = []
        for index, image in enumerate(images):
            results.append(self(image, spacing))
            on_labels(index, results[-1], self.quality(image, spacing, results[-1]))
        return results


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """phantom001-003 (phantom002 segmented shifted) and phantom004, whose image is corrupt."""
    root = tmp_path_factory.mktemp("report-cohort")
    write_cohort(root / "cohort", 3, seed=5)
    broken = root / "cohort" / "phantom004"
    broken.mkdir()
    (broken / "Info.cfg").write_text("ED: 1\nES: 5\nGroup: NOR\nHeight: 170\nNbFrame: 10\nWeight: 70\n")
    (broken / "phantom004_frame01.nii.gz").write_bytes(b"\x1f\x8b\x08\x00corrupt")
    return sorted((root / "cohort").iterdir())


def run_cohort(url: str, cohort: list[Path], tmp_path: Path) -> tuple[Engine, Settings]:
    """Submit the cohort as run ``RUN`` and run both stages of every study in this process."""
    engine = open_record(url)
    settings = Settings(database_url=url, trusted_model_roots=[tmp_path / "models"],
                        results_uri=str(tmp_path / "results"), cache_dir=tmp_path / "cache")
    model_dir = fake_model(tmp_path / "models")
    submission = submit_sources(engine, settings, name=RUN, source_uri=str(cohort[0].parent),
                                sources=[str(f) for f in cohort], model_dir=model_dir)
    ctx = StageContext(engine, LocalStore(settings.results_uri), settings)
    oracle = FlawedOracle(cohort[:3], cohort[1], cohort[2])
    model = ModelInfo(submission.fingerprint, oracle, oracle.segment_frames)
    for study_id in submission.study_ids:
        if segment_stage(ctx, study_id, model, worker="test"):
            evaluate_stage(ctx, study_id)
    return engine, settings


@pytest.fixture(scope="module")
def sqlite_record(cohort: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Settings]:
    """One SQLite record of the cohort shared by the page and CLI tests."""
    folder = tmp_path_factory.mktemp("report-record")
    url = f"sqlite:///{folder / 'record.db'}"
    engine, settings = run_cohort(url, cohort, folder)
    engine.dispose()
    return url, settings


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and a == pytest.approx(float(b), rel=1e-9, abs=1e-12)
    return bool(a == b)


def assert_rows_match(written: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(written) == len(expected)
    for got, want in zip(written, expected, strict=True):
        assert set(want) <= set(got), (got, want)
        for key, value in want.items():
            assert _close(got[key], value), (key, got, want)


def test_json_summary_agrees_with_the_views(record_url: str, cohort: list[Path], tmp_path: Path) -> None:
    engine, settings = run_cohort(record_url, cohort, tmp_path)
    path = tmp_path / "out" / "summary.json"
    assert write_report(engine, settings, RUN, json_path=path) == [path]
    summary = json.loads(path.read_text())
    assert set(summary) == {"run", "generated_at", "counts", "statistics", "agreement", "failures", "flags", "worst",
                            "quality", "viewer"}
    views = queries.run_report(engine, RUN)

    # counts: run_status_counts
    assert summary["counts"]["by_status"] == {r["status"]: r["n_studies"] for r in views["status"]}
    assert summary["counts"]["by_status"] == {"done": 3, "failed": 1} and summary["counts"]["total"] == 4

    # statistics: cohort_metric_stats; one group, so the per-structure pooling is the view's too
    assert_rows_match(summary["statistics"]["by_group"], views["metrics"])
    by_group = {(r["structure"], r["measure"]): r for r in views["metrics"]}
    assert {r["pathology_group"] for r in views["metrics"]} == {"PHANTOM"}
    for row in summary["statistics"]["by_structure"]:
        want = by_group[(row["structure"], row["measure"])]
        assert all(_close(row[k], want[k]) for k in ("n", "mean", "sd", "median")), (row, want)
    dice_by_phase = {(r["structure"], r["phase"]): r for r in summary["statistics"]["by_phase"]
                     if r["measure"] == "dice"}
    assert set(dice_by_phase) == {(s.value, p) for s in Structure for p in ("ED", "ES")}
    assert all(r["n"] == 3 for r in dice_by_phase.values())
    assert by_group[("LV", "dice")]["mean"] < 1.0  # the shifted study

    # agreement: run_index_agreement, keyed by index
    agreement = summary["agreement"]
    assert set(agreement) == {r["index_name"] for r in views["agreement"]} >= {"lv_ef_pct", "rv_ef_pct",
                                                                               "lv_edv_ml", "myo_mass_g"}
    for row in views["agreement"]:
        assert_rows_match([agreement[row["index_name"]]], [{k: v for k, v in row.items() if k != "index_name"}])

    # failures: run_failures and the failed study
    assert_rows_match(summary["failures"]["by_reason"], views["failures"])
    [failed] = summary["failures"]["studies"]
    assert failed["patient_id"] == "phantom004" and "corrupt or truncated" in failed["error"]

    # flags: run_qc's flagged studies, worst first
    qc = queries.run_qc(engine, RUN)
    assert len(qc) == 4  # one row per study of the run
    flagged = {r["study_id"]: r for r in qc if r["n_flags"] > 0}
    assert {r["study_id"] for r in summary["flags"]} == set(flagged)
    assert summary["counts"]["flagged"] == len(flagged)
    for row in summary["flags"]:
        want = flagged[row["study_id"]]
        assert {k: row[k] for k in ("patient_id", "n_flags", "flags")} == {k: want[k] for k in
                                                                           ("patient_id", "n_flags", "flags")}
        assert "; ".join(row["reasons"]) == want["flags"]
    # phantom002 (shifted) by its low predicted Dice alone; phantom003 also because its RV is missing at ES
    assert [r["patient_id"] for r in summary["flags"]] == ["phantom002", "phantom003"]
    assert all(reason.endswith("(below 0.8)") for reason in summary["flags"][0]["reasons"])
    assert "ES RV: predicted Dice 0.00 (below 0.8)" in summary["flags"][1]["reasons"]
    severities = [r["severity"] for r in summary["flags"]]
    assert severities == sorted(severities, reverse=True)

    # the worst studies by mean Dice, with their masks
    worst = summary["worst"]
    assert worst[0]["patient_id"] == "phantom002" and len(worst) == 3
    assert [w["mean_dice"] for w in worst] == sorted(w["mean_dice"] for w in worst)
    for entry in worst:
        assert set(entry["masks"]) == {"ED", "ES"}
        assert all(Path(m["uri"]).is_file() for m in entry["masks"].values())

    assert_quality_matches_the_record(summary["quality"], engine)
    engine.dispose()


#: frame_quality beside metrics, read here independently of db.queries.
PAIRS_SQL = """
SELECT s.id AS study_id, s.patient_id, q.frame, q.phase, q.structure, q.predicted_dice, m.dice
FROM frame_quality q JOIN studies s ON s.id = q.study_id
JOIN metrics m ON m.study_id = q.study_id AND m.model_id = q.model_id AND m.frame = q.frame
     AND m.structure = q.structure
"""


def assert_quality_matches_the_record(quality: dict[str, Any], engine: Engine) -> None:
    """``quality`` of the JSON summary against ``frame_quality`` and ``metrics``: n, mean predicted Dice, its mean
    absolute error and correlation against the actual Dice per structure and phase; each study's lowest."""
    rows = queries.fetch(engine, PAIRS_SQL)
    assert len(rows) == 3 * 2 * 3  # the done studies, their ED and ES, three structures: every frame has both
    assert all(r["predicted_dice"] == pytest.approx(PREDICTED_FACTOR * r["dice"]) for r in rows)
    by_phase = {(r["structure"], r["phase"]): r for r in quality["by_phase"]}
    assert list(by_phase) == [(s.value, p) for s in Structure for p in ("ED", "ES")]  # in label order
    for (structure, phase), got in by_phase.items():
        mine = [r for r in rows if (r["structure"], r["phase"]) == (structure, phase)]
        predicted = np.array([r["predicted_dice"] for r in mine])
        actual = np.array([r["dice"] for r in mine])
        assert got["n"] == got["n_reference"] == 3
        assert got["mean_predicted_dice"] == pytest.approx(predicted.mean())
        assert got["mean_abs_error"] == pytest.approx(np.abs(predicted - actual).mean())
        assert got["mean_abs_error"] == pytest.approx((1 - PREDICTED_FACTOR) * actual.mean())
        assert got["correlation"] == pytest.approx(np.corrcoef(predicted, actual)[0, 1])
        assert got["correlation"] == pytest.approx(1.0)  # the prediction is proportional to the Dice
    assert by_phase[("RV", "ES")]["mean_predicted_dice"] < by_phase[("RV", "ED")]["mean_predicted_dice"]

    studies = quality["studies_by_predicted_quality"]
    assert [s["patient_id"] for s in studies] == ["phantom003", "phantom002", "phantom001"]  # the failed one has none
    for study in studies:
        lowest = min((r for r in rows if r["study_id"] == study["study_id"]), key=lambda r: r["predicted_dice"])
        assert study["min_predicted_dice"] == pytest.approx(lowest["predicted_dice"])
        assert study["dice"] == pytest.approx(lowest["dice"])
    assert (studies[0]["structure"], studies[0]["phase"], studies[0]["min_predicted_dice"]) == ("RV", "ES", 0.0)
    assert studies[2]["min_predicted_dice"] == pytest.approx(PREDICTED_FACTOR)  # phantom001 is its reference


def chromium_driver() -> Any:
    """Debian's Chromium, headless, through its chromedriver (fails when missing: make system installs them)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for program in (CHROMIUM, CHROMEDRIVER):
        assert Path(program).exists(), f"{program} is not installed (make system)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,2000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def test_page_renders_in_chromium(sqlite_record: tuple[str, Settings], tmp_path: Path) -> None:
    url, settings = sqlite_record
    engine = open_record(url)
    page_dir = tmp_path / "page"
    [page] = write_report(engine, settings, RUN, html=page_dir, worst_n=2)
    flagged = [r for r in queries.run_qc(engine, RUN) if r["n_flags"] > 0]
    engine.dispose()
    assert page == page_dir / "index.html"
    html = page.read_text()
    assert "<script" not in html.lower()
    pngs = sorted(p.name for p in page_dir.glob("*.png"))
    assert {"dice_by_structure.png", "dice_by_phase.png", "dice_by_group.png", "bland_altman_lv_ef_pct.png",
            "bland_altman_rv_ef_pct.png", "bland_altman_lv_edv_ml.png", "bland_altman_myo_mass_g.png",
            QUALITY_FIGURE} <= set(pngs)
    montages = [p for p in pngs if p.startswith("montage_")]
    drawable = {r["study_id"] for r in flagged if r["status"] == "done"}
    assert len(montages) == len(drawable | set(_worst_ids(url, 2)))
    assert "phantom002" in html and "_frame01.nii.gz" in html  # the worst study and its mask's path
    assert "Predicted quality" in html and "The 3 studies with the lowest predicted Dice" in html

    driver = chromium_driver()
    try:
        driver.get(page.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    assert sorted(src for src, _, _ in images) == pngs
    assert all(complete and width > 0 for _, complete, width in images), images
    assert [entry for entry in logs if entry["level"] == "SEVERE"] == []


def _worst_ids(url: str, n: int) -> list[int]:
    engine = open_record(url)
    rows = queries.run_metric_rows(engine, RUN)
    engine.dispose()
    means: dict[int, list[float]] = {}
    for row in rows:
        if row["dice"] is not None:
            means.setdefault(row["study_id"], []).append(row["dice"])
    return sorted(means, key=lambda k: sum(means[k]) / len(means[k]))[:n]


def test_report_command_writes_page_and_json(sqlite_record: tuple[str, Settings], tmp_path: Path) -> None:
    url, settings = sqlite_record
    env = {**os.environ, "HEARTSEG_DATABASE_URL": url, "HEARTSEG_RESULTS_URI": settings.results_uri,
           "HEARTSEG_CACHE_DIR": str(settings.cache_dir)}
    command = [sys.executable, "-m", "scheduler.cli", "report", RUN]
    result = subprocess.run([*command, "--html", str(tmp_path / "page"), "--json", str(tmp_path / "s.json")],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 's.json'}" in result.stdout and "index.html" in result.stdout
    assert json.loads((tmp_path / "s.json").read_text())["counts"]["by_status"] == {"done": 3, "failed": 1}
    assert (tmp_path / "page" / "index.html").is_file() and (tmp_path / "page" / "dice_by_structure.png").is_file()
    assert (tmp_path / "page" / QUALITY_FIGURE).is_file()
    # without the options: the tables, as before; an unknown run: one line, exit 2
    tables = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert tables.returncode == 0 and "studies by status" in tables.stdout and not (tmp_path / "other").exists()
    unknown = subprocess.run([*command[:-1], "nope", "--json", str(tmp_path / "x.json")], capture_output=True,
                             text=True, timeout=300, env=env, check=False)
    assert unknown.returncode == 2 and "no run named 'nope'" in unknown.stderr


def test_display_plane_follows_the_affine() -> None:
    volume = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    acdc = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxel x to the patient's left, y posterior: shown as stored
    assert np.array_equal(display_plane(volume, 0, acdc), volume[:, :, 0].T)
    ras = np.diag([1.0, 1.0, 1.0, 1.0])  # x to the right, y anterior: both flipped
    assert np.array_equal(display_plane(volume, 0, ras), volume[::-1, ::-1, 0].T)
    swapped = np.array([[0.0, -1.0, 0, 0], [-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # axis 1 is x
    assert np.array_equal(display_plane(volume, 0, swapped), volume[:, :, 0])
