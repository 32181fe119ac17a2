"""The lease keeper renews by the clock while a stage works, survives a failed renewal, and stops after."""

from __future__ import annotations

import threading

from workers.lease_keeper import lease_kept


def test_renews_until_the_block_ends_even_after_a_failure() -> None:
    calls: list[int] = []
    third = threading.Event()

    def renew() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the record blinked")
        if len(calls) >= 3:
            third.set()

    with lease_kept(renew, 0.01):
        assert third.wait(10), "renewals stopped after a failed one"
    after = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) == after  # nothing renews a study the stage has left


def test_without_a_renewer_the_block_just_runs() -> None:
    with lease_kept(None, 0.01):
        ran = True
    assert ran
