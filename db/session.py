"""Engines and sessions for the record. The caller owns the session (``with session_scope(...)``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout for several processes."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine`` (objects stay readable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session


def open_record(url: str, *, migrate: bool | None = None) -> Engine:
    """An engine for the record at ``url``, with this HeartSeg's schema.

    The embedded record (SQLite) is migrated on open (its one user runs one HeartSeg). A server's
    record (PostgreSQL) is only checked: an empty database gets the schema created, and a record at
    another revision raises :class:`~db.migrate.RecordBehindError`, telling the user to run
    ``heartseg db upgrade``. ``migrate`` forces the one or the other.
    """
    from db.migrate import require_head, upgrade

    engine = make_engine(url)
    if migrate if migrate is not None else engine.dialect.name == "sqlite":
        upgrade(engine)
    else:
        require_head(engine)
    return engine
