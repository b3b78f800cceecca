"""/v1 reads of one statement at a time run in autocommit on PostgreSQL (no BEGIN, no ROLLBACK
around them), and hand their connections back as they found them."""

from __future__ import annotations

from sqlalchemy import text

from receiver.db import get_read_session, get_session
from tests.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def autocommit(session) -> bool:
    return bool(getattr(session.connection().connection.dbapi_connection, "autocommit", False))


def test_a_read_session_is_in_autocommit_on_postgresql_only(committed_db, backend, app_factory):
    app = app_factory(committed_db)
    with app.app_context():
        read = get_read_session()
        assert autocommit(read) is (backend.name == "postgresql")
        if backend.name == "postgresql":  # each statement is a transaction of its own
            first, second = (read.execute(text("SELECT txid_current()")).scalar() for _ in range(2))
            assert first != second
        if backend.name == "postgresql":
            assert not autocommit(get_session())  # the request's other session keeps its transaction
        else:
            assert get_session() is read  # SQLite: one session (and lock) per request


def test_reads_answer_and_leave_the_pool_as_they_found_it(committed_db, backend, app_factory):
    app = app_factory(committed_db)
    client = app.test_client()
    created = client.post("/v1/dismissals", json={"group_id": "@TGS#read", "reason": "read test"}, headers=AUTH)
    assert created.status_code == 202, created.get_json()
    dismissal_id = created.get_json()["id"]
    for path in ("/v1/dismissals?group_id=%40TGS%23read", f"/v1/dismissals/{dismissal_id}",
                 f"/v1/dismissals/{dismissal_id}?wait=0.2", "/v1/callbacks", "/v1/members/nobody/dismissals"):
        resp = client.get(path, headers=AUTH)
        assert resp.status_code == 200, (path, resp.get_json())
    assert client.get("/v1/dismissals?group_id=%40TGS%23read", headers=AUTH).get_json()["items"][0]["id"] == dismissal_id
    # A write after the reads: its connection (from the same pool) is in a transaction again.
    session = committed_db.session_factory()
    try:
        assert not autocommit(session)
        session.execute(text("SELECT 1"))
        assert session.in_transaction()
    finally:
        session.close()
    again = client.post("/v1/dismissals", json={"group_id": "@TGS#read2", "reason": "after reads"}, headers=AUTH)
    assert again.status_code == 202, again.get_json()
