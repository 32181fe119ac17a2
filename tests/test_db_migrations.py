"""Migrations go from empty to head and back, on PostgreSQL and SQLite, and match the models."""

from __future__ import annotations

from sqlalchemy import inspect

from db.migrate import check, downgrade, upgrade
from db.session import make_engine

TABLES = {"models", "runs", "studies", "masks", "metrics", "cardiac_indices"}
VIEWS = {"cohort_metric_stats", "run_index_agreement", "run_status_counts", "run_failures", "run_dice_comparison"}


def test_upgrade_downgrade_upgrade(record_url: str) -> None:
    engine = make_engine(record_url)
    try:
        upgrade(engine)
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) >= TABLES
        assert set(inspector.get_view_names()) == VIEWS
        check(engine)  # the ORM models and the migrations agree (alembic check)
        downgrade(engine)
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) <= {"alembic_version"}
        assert inspector.get_view_names() == []
        upgrade(engine)
        assert set(inspect(engine).get_view_names()) == VIEWS
    finally:
        engine.dispose()
