"""Errors that mean "try again soon": the record, the broker or the storage was unreachable for a moment.

A task retries them with backoff and they do not count as a study's tries. Everything else that is
not a :class:`~heartseg.errors.StudyError` (bad input, failed at once) counts as a failed try.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError as BrokerUnreachable
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import OperationalError as RecordUnreachable

from heartseg.storage import StorageError

#: The transient errors: the record's (SQLAlchemy wraps the driver's), the broker's (kombu's, and redis-py's when
#: it escapes kombu), the storage's, and the operating system's connection errors and timeouts.
TRANSIENT: tuple[type[BaseException], ...] = (
    RecordUnreachable, DisconnectionError, BrokerUnreachable, RedisConnectionError, RedisTimeoutError,
    StorageError, ConnectionError, TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying without counting a try."""
    return isinstance(exc, TRANSIENT)
