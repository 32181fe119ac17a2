"""The lease keeper renews by the clock while a stage works, survives a failed renewal, and knows when the lease
is lost: a renewal refused, no renewal for a whole lease, or a study held past its limit."""

from __future__ import annotations

import threading
import time

import pytest

from workers.lease_keeper import Lease, LeaseLostError, lease_kept


def test_renews_until_the_block_ends_even_after_a_failure() -> None:
    calls: list[int] = []
    third = threading.Event()

    def renew() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the record blinked")
        if len(calls) >= 3:
            third.set()
        return True

    with lease_kept(Lease(renew, lease_s=60), 0.01) as lease:
        assert third.wait(10), "renewals stopped after a failed one"
    after = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) == after  # nothing renews a study the stage has left
    assert lease is not None and not lease.lost


def test_a_refused_renewal_loses_the_lease_and_stops_renewing() -> None:
    calls: list[int] = []
    lost = Lease(lambda: calls.append(1) is not None, lease_s=60)  # the record says another worker holds it
    with lease_kept(lost, 0.01):
        deadline = time.monotonic() + 10
        while not lost.lost and time.monotonic() < deadline:
            time.sleep(0.01)
    assert lost.lost and len(calls) == 1
    with pytest.raises(LeaseLostError, match="another worker holds the study"):
        lost.check()


def test_no_renewal_for_a_whole_lease_counts_as_lost() -> None:
    def unreachable() -> bool:
        raise ConnectionError("the record is down")

    lease = Lease(unreachable, lease_s=0.2)
    with lease_kept(lease, 0.05):
        assert not lease.lost
        time.sleep(0.4)
        assert lease.lost and "no renewal for 0.2 s" in lease.reason


def test_a_study_held_past_its_limit_is_no_longer_renewed() -> None:
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        return True

    lease = Lease(renew, lease_s=60, max_hold_s=0.0)
    with lease_kept(lease, 0.01):
        time.sleep(0.2)
    assert calls == []  # a hung worker lets its lease run out, and another worker takes the study


def test_without_a_lease_the_block_just_runs() -> None:
    with lease_kept(None, 0.01) as lease:
        ran = True
    assert ran and lease is None
