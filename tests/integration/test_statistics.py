"""Planner statistics: a batch of dismissals large for its table is followed by an ANALYZE (PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from receiver import sqlutil
from receiver.dismissals.service import request_batch
from receiver.models import Dismissal

APP = 1400000001


def _last_analyze(database):
    with database.engine.connect() as conn:
        return conn.execute(text(
            "SELECT last_analyze FROM pg_stat_user_tables"
            " WHERE schemaname = current_schema() AND relname = 'dismissals'"
        )).scalar_one()


def _batch(database, prefix: str, n: int) -> None:
    with database.session_scope() as s:
        items = request_batch(s, sdkappid=APP, group_ids=[f"{prefix}-{i}" for i in range(n)])
    assert sum(item.created for item in items) == n


@pytest.fixture
def postgres_only(backend):
    if backend.name != "postgresql":
        pytest.skip("ANALYZE after a batch is PostgreSQL's (SQLite plans without statistics)")


def test_a_batch_large_for_its_table_is_analyzed_with_it(committed_db, postgres_only, monkeypatch):
    monkeypatch.setattr(sqlutil, "ANALYZE_AFTER_ROWS", 20)
    before = _last_analyze(committed_db)
    _batch(committed_db, "small", 19)  # under ANALYZE_AFTER_ROWS: left to autovacuum
    assert _last_analyze(committed_db) == before
    _batch(committed_db, "large", 200)
    after = _last_analyze(committed_db)
    assert after is not None and (before is None or after > before)
    with committed_db.engine.connect() as conn:  # what the planner now knows of the table
        known = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'dismissals'::regclass")).scalar_one()
    assert known >= 219


def test_a_batch_small_beside_what_the_statistics_know_is_left_to_autovacuum(committed_db, postgres_only, monkeypatch):
    monkeypatch.setattr(sqlutil, "ANALYZE_AFTER_ROWS", 20)
    _batch(committed_db, "known", 300)  # analyzed: the statistics know of 300 rows
    analyzed = _last_analyze(committed_db)
    _batch(committed_db, "more", 25)  # over ANALYZE_AFTER_ROWS, but under a tenth of 300
    assert _last_analyze(committed_db) == analyzed
    _batch(committed_db, "many", 40)  # over a tenth of what the statistics know
    assert _last_analyze(committed_db) > analyzed


def test_a_failed_refresh_is_logged_and_leaves_the_session_usable(committed_db, postgres_only, monkeypatch):
    monkeypatch.setattr(sqlutil, "ANALYZE_AFTER_ROWS", 1)

    class NotOurs:  # a table the database does not have: the ANALYZE fails
        name = "no_such_table"

    with committed_db.session_scope() as s:
        assert sqlutil.refresh_statistics(s, NotOurs, 5) is False
        assert s.execute(text("SELECT 1")).scalar_one() == 1


def test_sqlite_is_never_analyzed(committed_db, backend, monkeypatch):
    if backend.name != "sqlite":
        pytest.skip("the SQLite side of refresh_statistics")
    monkeypatch.setattr(sqlutil, "ANALYZE_AFTER_ROWS", 1)
    with committed_db.session_scope() as s:
        assert sqlutil.refresh_statistics(s, Dismissal.__table__, 10) is False
