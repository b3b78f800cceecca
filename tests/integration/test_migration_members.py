"""The second revision: group_members.callback_id loses its foreign key and index, and no member row is lost."""

from __future__ import annotations

import os
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from receiver import migrate

FIRST = "ad580fa9ed49"
WHEN = "2026-12-01 10:00:00+00:00"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """A database with no tables yet: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'members.db'}"
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set")
    base = base.replace("postgresql://", "postgresql+psycopg://", 1) if base.startswith("postgresql://") else base
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _callback_id_constraints(conn) -> tuple[bool, bool, bool]:
    """(nullable, has a foreign key, has an index) of group_members.callback_id."""
    found = inspect(conn)
    (column,) = [c for c in found.get_columns("group_members") if c["name"] == "callback_id"]
    return (column["nullable"],
            any(fk["constrained_columns"] == ["callback_id"] for fk in found.get_foreign_keys("group_members")),
            any(ix["column_names"] == ["callback_id"] for ix in found.get_indexes("group_members")))


def test_member_callback_ids_lose_their_constraints_up_and_get_them_back_down(empty_url):
    cfg = migrate.alembic_config(empty_url)
    command.upgrade(cfg, FIRST)
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            assert _callback_id_constraints(conn) == (False, True, True)
            conn.execute(text(
                "INSERT INTO callbacks (id, state, sdkappid, query_string, received_at, duplicates, raw_body)"
                " VALUES ('CB1', 'accepted', 1400000000, '', :when, 0, :raw)"), {"when": WHEN, "raw": b"{}"})
            conn.execute(text(
                "INSERT INTO dismissals (id, group_id, sdkappid, source, status, callback_id, attempts, probes,"
                " redispatches, updated_at) VALUES ('D1', 'g1', 1400000000, 'external', 'confirmed', 'CB1', 0, 0, 0,"
                " :when)"), {"when": WHEN})
            conn.execute(text("INSERT INTO group_members (dismissal_id, callback_id, group_id, account)"
                              " VALUES ('D1', 'CB1', 'g1', 'alice')"))

        command.upgrade(cfg, "head")
        with engine.begin() as conn:
            assert _callback_id_constraints(conn) == (True, False, False)
            # A row written without it (as a later release will) is taken.
            conn.execute(text("INSERT INTO group_members (dismissal_id, group_id, account) VALUES ('D1', 'g1', 'bob')"))
            assert conn.execute(text("SELECT account, callback_id FROM group_members ORDER BY account")).all() == [
                ("alice", "CB1"), ("bob", None)]

        command.downgrade(cfg, FIRST)
        with engine.connect() as conn:
            assert _callback_id_constraints(conn) == (False, True, True)
            # bob's callback comes back from his dismissal.
            assert conn.execute(text("SELECT account, callback_id FROM group_members ORDER BY account")).all() == [
                ("alice", "CB1"), ("bob", "CB1")]
    finally:
        engine.dispose()
