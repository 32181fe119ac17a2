"""Apply, undo and check the Alembic migrations in ``db/migrations`` from Python."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from heartseg.errors import HeartSegError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The PostgreSQL advisory lock held while a process migrates the record.
MIGRATION_LOCK = 0x4853_4D47  # "HSMG"


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction for migrations, one process at a time on PostgreSQL (an advisory lock);
    on SQLite (whose writers take the database's lock), foreign keys are not enforced in it.

    SQLite alters a table by copying it into a new table and dropping the old one; with foreign
    keys enforced, that drop deletes every row that references the old table (``ON DELETE
    CASCADE``). SQLite switches enforcement only outside a transaction, so it is switched off
    before the transaction, the references are checked (``PRAGMA foreign_key_check``) before it
    commits, and enforcement is switched on again after it.

    Raises
    ------
    HeartSegError
        On SQLite, when enforcement cannot be switched off, or the migrated rows break a reference.
    """
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                # Processes that start together (workers, a submit) migrate one after the other: the
                # second finds the record at head and does nothing.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                yield connection
            return
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
        try:
            if connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one():
                raise HeartSegError(f"{engine.url}: foreign keys stay enforced (the driver holds a transaction "
                                    "open), so migrating could delete rows; connect with the sqlite3 module's "
                                    "default transaction control")
            connection.rollback()
            with connection.begin():
                yield connection
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise HeartSegError(f"{engine.url}: the migration left rows whose references are gone "
                                        f"(table, rowid, parent): {[tuple(row[:3]) for row in broken[:5]]}")
        finally:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` up to ``revision``."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with _migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database behind ``engine`` down to ``revision``."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with _migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def check(engine: Engine) -> None:
    """Raise if the ORM models and the migrations have drifted apart (``alembic check``)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.check(config)


class RecordBehindError(HeartSegError):
    """The record's schema is not the one this HeartSeg needs: ``heartseg db upgrade`` (or a newer HeartSeg)."""


def head_revision() -> str:
    """The newest revision this HeartSeg knows (its migrations' head)."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations have no head"
    return head


def record_revision(engine: Engine) -> str | None:
    """The revision the record is at; None for a database without HeartSeg's tables."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_head(engine: Engine) -> None:
    """Make sure the record behind ``engine`` has this HeartSeg's schema; an empty database gets it created.

    A record that has tables is never migrated here: :func:`upgrade` (``heartseg db upgrade``) does it, once,
    when its operator chooses (after a backup).

    Raises
    ------
    RecordBehindError
        When the record is at an older revision (run ``heartseg db upgrade``), or at one this HeartSeg does
        not know (a newer HeartSeg migrated it).
    """
    head, current = head_revision(), record_revision(engine)
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        from db.schema import Base

        with engine.connect() as connection:
            strangers = set(inspect(connection).get_table_names()) - set(Base.metadata.tables) - {"alembic_version"}
        if not strangers:
            # A new database (or one another process is creating the schema in): create it. Migrations
            # take a lock, so a second process waits for the first and then finds the record at head.
            upgrade(engine)
            return
        raise RecordBehindError(f"the database at {where} has tables that are not HeartSeg's and no HeartSeg "
                                f"revision ({', '.join(sorted(strangers)[:5])}): is it HeartSeg's record?")
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}
    if current in known:
        raise RecordBehindError(f"the record at {where} is at revision {current} and this HeartSeg needs {head}: "
                                "back it up and run `heartseg db upgrade`")
    raise RecordBehindError(f"the record at {where} is at revision {current}, which this HeartSeg does not know "
                            f"(its newest is {head}): a newer HeartSeg migrated it; upgrade HeartSeg")
