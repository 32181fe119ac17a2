"""Keep a study's lease alive while a stage works on it, from a background thread, and know when it is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from heartseg.errors import HeartSegError

logger = logging.getLogger(__name__)


class LeaseLostError(HeartSegError):
    """This worker no longer holds the study: another worker may have it; write nothing more about it."""


class Lease:
    """The state of one claim: renewed by a thread, lost when a renewal says so or could not be made in time.

    ``renew`` returns whether the record still gives the study to this worker (a conditional update);
    it may raise when the record is unreachable. The lease counts as lost when a renewal returns False,
    when no renewal succeeded for ``lease_s`` (the record may have handed the study to another worker
    meanwhile), or, once ``max_hold_s`` has passed, when renewing stops on purpose: a worker that hangs
    on one study lets it go to another.
    """

    def __init__(self, renew: Callable[[], bool], lease_s: float, max_hold_s: float | None = None) -> None:
        self._renew = renew
        self.lease_s = lease_s
        self.max_hold_s = max_hold_s
        self._claimed = self._renewed = time.monotonic()
        self._lost = threading.Event()
        self.reason = ""

    @property
    def lost(self) -> bool:
        """Whether this worker may no longer write about the study."""
        if not self._lost.is_set() and time.monotonic() - self._renewed > self.lease_s:
            self._lose(f"no renewal for {self.lease_s:g} s")
        return self._lost.is_set()

    def check(self) -> None:
        """Renew now, and raise :class:`LeaseLostError` when the lease is lost (called before each write)."""
        self.renew()
        if self.lost:
            raise LeaseLostError(f"the lease on the study was lost ({self.reason}); another worker may hold it")

    def renew(self) -> None:
        """Renew once (the keeper's tick); a failure is logged and leaves the lease to run out."""
        if self._lost.is_set():
            return
        if self.max_hold_s is not None and time.monotonic() - self._claimed > self.max_hold_s:
            logger.warning("held the study for over %.0f s: no longer renewing its lease", self.max_hold_s)
            return
        try:
            held = self._renew()
        except Exception:
            logger.warning("could not renew the lease; trying again at the next tick", exc_info=True)
            return
        if held:
            self._renewed = time.monotonic()
        else:
            self._lose("another worker holds the study, or it is no longer running")

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self._lost.set()
        logger.warning("lease lost: %s; the study is left to whoever holds it", reason)


@contextmanager
def lease_kept(lease: Lease | None, interval_s: float) -> Iterator[Lease | None]:
    """Call ``lease.renew`` every ``interval_s`` seconds until the block ends.

    A study waits for the device behind the other studies of its worker, and a frame group can take
    longer than a short lease, so the lease is renewed by the clock, not by progress. A process that
    dies takes this thread with it, and its leases expire.
    """
    if lease is None:
        yield None
        return
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(interval_s):
            lease.renew()

    thread = threading.Thread(target=keep, name="heartseg-lease", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
