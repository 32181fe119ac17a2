"""``heartseg run SOURCE -o DIR`` keeps record, results, logs, cache and broker in DIR, not in the cwd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import Study, Worker
from db.session import make_engine
from heartseg.enums import StudyStatus
from heartseg.settings import PROJECT_ROOT, Settings
from scheduler.local_run import run_folder_settings
from tests.phantom_cache import write_cohort


def test_run_keeps_everything_in_its_folder(tmp_path: Path) -> None:
    write_cohort(tmp_path / "cohort", 1, seed=17)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTSEG_")}
    env.update({"HEARTSEG_USE_MIRRORING": "false", "HEARTSEG_DEVICE": "cpu",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))})
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "run", str(tmp_path / "cohort"), "-o", str(out),
                             "--frames", "ed-es"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    engine = make_engine(f"sqlite:///{out / 'record.db'}")
    with engine.connect() as connection:
        statuses = connection.execute(select(Study.status)).scalars().all()
        workers = connection.execute(select(Worker.name, Worker.queue, Worker.device, Worker.model_fingerprint,
                                            Worker.stopped_at, Worker.last_error).order_by(Worker.name)).all()
    engine.dispose()
    assert statuses == [StudyStatus.DONE]
    assert [(w.name, w.queue, w.device, w.last_error) for w in workers] == [
        ("cpu@local", "cpu", None, None), ("gpucpu@local", "gpu", "cpu", None)]
    assert workers[1].model_fingerprint is not None and len(workers[1].model_fingerprint) == 64
    assert all(w.stopped_at is not None for w in workers)  # both stopped cleanly with the run
    assert list((out / "results").rglob("*.nii.gz")), "no masks under the run folder's results"
    assert sorted(p.name for p in (out / "logs").iterdir())
    assert list(cwd.iterdir()) == []
    assert f"record: {(out / 'record.db').resolve()}" in result.stdout
    assert f"results: {(out / 'results').resolve()}" in result.stdout


def test_settings_given_explicitly_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("HEARTSEG_")]:
        monkeypatch.delenv(name)
    explicit = Settings(results_uri="s3://bucket/masks", database_url="sqlite:///elsewhere.db")
    settings = run_folder_settings(explicit, tmp_path, keep_explicit=True)
    assert settings.results_uri == "s3://bucket/masks"
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.cache_dir == (tmp_path / "cache").resolve()
    assert settings.embedded_broker_dir == (tmp_path / "broker").resolve()
    overridden = run_folder_settings(explicit, tmp_path)  # the demo's: everything in the folder
    assert overridden.results_uri == str((tmp_path / "results").resolve())
