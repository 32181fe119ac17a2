"""A lost evaluation message: a study is ``segmented`` and its message is deleted from the ``cpu`` queue in
Redis. Nothing would ever evaluate it; the reconciler sends the evaluation of a ``segmented`` study that made no
progress again."""

from __future__ import annotations

from pathlib import Path

from heartseg.settings import Settings
from tests.faults.harness import Scenario, drop_queue
from workers.celery_app import CPU_QUEUE, create_app

RUN = "evaluation-message-lost"


def test_lost_evaluation_message(pool: Scenario, own_cohort: Path) -> None:
    scenario = pool.reuse("evaluation message lost")
    metrics_worker = next(w.name for w in scenario.workers if w.name.startswith("cpu@"))
    app = create_app(Settings(broker_url=scenario.broker.url()))
    control = app.control
    replies = control.cancel_consumer(CPU_QUEUE, destination=[metrics_worker], reply=True, timeout=10)
    assert replies, f"{metrics_worker} did not stop consuming {CPU_QUEUE}"  # its messages now stay in Redis
    try:
        scenario.submit(own_cohort, RUN)
        scenario.wait_for_status(RUN, "segmented", count=2)
        lost = drop_queue(scenario.broker.client(), CPU_QUEUE)
        scenario.fault(f"deleted the {CPU_QUEUE} queue ({lost} messages)")
        assert lost >= 2, f"expected the 2 evaluation messages in the {CPU_QUEUE} queue, found {lost}"
    finally:
        control.add_consumer(CPU_QUEUE, destination=[metrics_worker], reply=True, timeout=10)
        app.close()

    scenario.conclude(RUN, 2, lost_messages=lost)
