"""Keep a study's lease alive while a stage works on it, from a background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def lease_kept(renew: Callable[[], None] | None, interval_s: float) -> Iterator[None]:
    """Call ``renew`` every ``interval_s`` seconds until the block ends.

    A study waits for the device behind the other studies of its worker, and a frame group can take
    longer than a short lease, so the lease is renewed by the clock, not by progress. A process that
    dies takes this thread with it, and its leases expire. A failed renewal is logged and tried again
    at the next tick (the record may be unreachable for a moment).
    """
    if renew is None:
        yield
        return
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(interval_s):
            try:
                renew()
            except Exception:
                logger.warning("could not renew the lease; trying again in %.0f s", interval_s, exc_info=True)

    thread = threading.Thread(target=keep, name="heartseg-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
