"""The cohort views, set aside while a migration rebuilds a table on SQLite.

SQLite alters a table by creating a new one, copying the rows and renaming it over the old one; the
rename fails while a view reads a table that is gone. A migration that alters a table the views of
revision 0002 read wraps the change in :func:`cohort_views_set_aside`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op

#: The revision that creates the cohort views (its module's ``VIEWS``: ``{name: select}``).
COHORT_VIEWS_REVISION = "0002"


@contextmanager
def cohort_views_set_aside(revision: str) -> Iterator[None]:
    """On SQLite, drop the cohort views for the block and create them again after it; elsewhere nothing.

    Raises
    ------
    RuntimeError
        When the script directory lacks the revision that defines the views (``revision`` names the
        migration that needs them, for the message).
    """
    if op.get_context().dialect.name != "sqlite":
        yield
        return
    script = op.get_context().script
    cohort_views = script.get_revision(COHORT_VIEWS_REVISION) if script is not None else None
    if cohort_views is None:
        raise RuntimeError(f"revision {revision} needs revision {COHORT_VIEWS_REVISION} in the script directory "
                           "(its views)")
    views: dict[str, str] = cohort_views.module.VIEWS
    for name in reversed(views):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    yield
    for name, select in views.items():
        op.execute(f"CREATE VIEW {name} AS {select}")
