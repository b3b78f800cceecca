"""Migrations on SQLite: a table that a batch migration recreates keeps the rows pointing at it."""

from __future__ import annotations

import shutil

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from receiver import migrate
from receiver.db import Database
from tests.conftest import TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode

# A later release's migration as Alembic writes them for SQLite: `callbacks` is copied into a new
# table, dropped and renamed back (SQLite cannot alter most of a table in place).
_NEXT_REVISION = '''
from alembic import op
import sqlalchemy as sa

revision = "zz_recreate_callbacks"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("callbacks", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("note", sa.String(20), nullable=True))


def downgrade():
    with op.batch_alter_table("callbacks", recreate="always") as batch_op:
        batch_op.drop_column("note")
'''


@pytest.fixture
def scripts(tmp_path):
    """This code's migrations, plus one more that recreates `callbacks`."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.ROOT / "migrations", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "zz_recreate_callbacks.py").write_text(_NEXT_REVISION.format(head=migrate.head_revision()))
    return copy


def _counts(url: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                         for table in ("callbacks", "dismissals", "group_members"))
    finally:
        engine.dispose()


def test_recreating_a_table_does_not_cascade_into_its_children(tmp_path, scripts, app_factory):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    database = Database(url)
    try:
        client = app_factory(database).test_client()
        resp = client.post("/im/callback?" + callback_query(TEST_SDKAPPID), data=encode(destroyed_body()),
                           content_type="application/json")
        assert resp.status_code == 200 and resp.json["ErrorCode"] == 0, resp.json
    finally:
        database.dispose()
    before = _counts(url)
    assert before == (1, 1, 3)  # the callback, its external dismissal, its three members

    cfg = migrate.alembic_config(url)
    cfg.set_main_option("script_location", str(scripts))
    command.upgrade(cfg, "head")

    # With foreign keys on, SQLite's DROP TABLE of the old `callbacks` deletes its rows first: that
    # failed the migration (dismissals point at them), and ON DELETE CASCADE would have taken
    # every member row with them.
    assert _counts(url) == before
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "zz_recreate_callbacks"
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()


def test_a_migration_that_breaks_a_reference_is_rolled_back(tmp_path, scripts):
    # With the checks off during the migration, the migration itself must not leave a dangling row.
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    (scripts / "versions" / "zz_recreate_callbacks.py").write_text(_NEXT_REVISION.format(head=migrate.head_revision()).replace(
        '        batch_op.add_column(sa.Column("note", sa.String(20), nullable=True))',
        '        batch_op.add_column(sa.Column("note", sa.String(20), nullable=True))\n'
        '    op.execute("INSERT INTO dismissal_attempts (dismissal_id, api, started_at, duration_ms, outcome) '
        "VALUES ('no-such-dismissal', 'destroy_group', '2026-01-01 00:00:00.000000', 1, 'sent')\")", 1))
    cfg = migrate.alembic_config(url)
    cfg.set_main_option("script_location", str(scripts))
    with pytest.raises(Exception, match="foreign key"):
        command.upgrade(cfg, "head")
    engine = create_engine(url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dismissal_attempts")).scalar_one() == 0
    finally:
        engine.dispose()
