"""A study's life in the record: claims are exclusive, expired leases go back to the queue."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

import db.lifecycle
from db.lifecycle import (
    claim_study,
    mark_done,
    mark_failed,
    renew_lease,
    requeue_expired,
    requeue_failed,
    requeue_finished,
)
from db.schema import Study
from db.session import open_record, session_scope
from heartseg.enums import StudyStatus
from tests.record_fixtures import new_run


def test_claims_are_exclusive_and_expired_leases_requeue(record_url: str) -> None:
    engine = open_record(record_url)
    _, studies = new_run(engine, "run-a", sources=["s1", "s2"])
    s1, s2 = studies["s1"], studies["s2"]
    with session_scope(engine) as session:
        assert claim_study(session, s1, "gpu0@a", lease_s=0.5)
        assert not claim_study(session, s1, "gpu1@b", lease_s=60)  # held
        assert claim_study(session, s2, "gpu1@b", lease_s=60)
        assert renew_lease(session, s2, "gpu1@b", lease_s=60)
        assert not renew_lease(session, s2, "gpu0@a", lease_s=60)  # not its study
    time.sleep(1.0)
    with session_scope(engine) as session:
        assert requeue_expired(session) == ([s1], [])  # s1's worker stopped renewing; s2's lease holds
        assert claim_study(session, s1, "gpu1@b", lease_s=60)
        study = session.execute(select(Study).where(Study.id == s1)).scalar_one()
        assert (study.status, study.attempts, study.worker) == (StudyStatus.RUNNING, 2, "gpu1@b")
        mark_failed(session, s2, "x.nii.gz: file not found")
        run_id = study.run_id
    with session_scope(engine) as session:
        assert requeue_failed(session, run_id) == [s2]
        study = session.execute(select(Study).where(Study.id == s2)).scalar_one()
        assert (study.status, study.error) == (StudyStatus.QUEUED, None)
    engine.dispose()


def test_requeue_finished_takes_more_ids_than_one_in_list(record_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids go to the record in ``IN`` lists of at most ``IN_CHUNK`` (a statement's parameters are bounded), and
    only the given studies of the run are queued again."""
    monkeypatch.setattr(db.lifecycle, "IN_CHUNK", 2)
    engine = open_record(record_url)
    sources = [f"s{i}" for i in range(7)]
    _, studies = new_run(engine, "run-a", sources=sources)
    with session_scope(engine) as session:
        for source in sources:
            assert claim_study(session, studies[source], "gpu0@a", lease_s=60)
            mark_done(session, studies[source], metrics_s=1.0)
        run_id = session.execute(select(Study.run_id).where(Study.id == studies["s0"])).scalar_one()
    given = sorted(studies[s] for s in sources[:5])
    with session_scope(engine) as session:
        assert requeue_finished(session, run_id, (StudyStatus.DONE,), given) == given
    with session_scope(engine) as session:
        statuses = {i: status for i, status in session.execute(select(Study.id, Study.status))}
    assert statuses == {i: StudyStatus.QUEUED if i in given else StudyStatus.DONE for i in studies.values()}
    engine.dispose()
