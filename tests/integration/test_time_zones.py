"""A PostgreSQL server whose TimeZone is not UTC: every accepted time still comes back, as UTC."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from receiver.db import Database
from receiver.schemas.tencent import MAX_EVENT_TIME_MS
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode

EAST_OF_UTC = "Pacific/Kiritimati"  # UTC+14, the furthest east of any zone


@pytest.fixture
def east_db(backend):
    if backend.name != "postgresql":
        pytest.skip("SQLite has no session time zone: it stores and returns what it is given")
    database = Database(f"{backend.url}{quote(' -cTimeZone=' + EAST_OF_UTC)}")
    yield database
    database.dispose()
    backend.clean()


def test_the_latest_accepted_event_time_reads_back_on_a_server_east_of_utc(east_db, app_factory, live_server_factory):
    with east_db.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW TimeZone").scalar() == EAST_OF_UTC
    server = live_server_factory(app_factory(east_db))
    resp = server.http.post(f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}",
                            data=encode(destroyed_body("g-last-day", event_time=MAX_EVENT_TIME_MS)),
                            headers={"Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.json()["ErrorCode"] == 0
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    page = server.http.get(f"{server.url}/v1/callbacks?group_id=g-last-day", headers=auth)
    assert page.status_code == 200
    assert [item["event_time"] for item in page.json()["items"]] == ["9999-12-30T23:59:59.999Z"]
    dismissals = server.http.get(f"{server.url}/v1/dismissals?group_id=g-last-day", headers=auth).json()["items"]
    assert dismissals[0]["callback"]["event_time"] == "9999-12-30T23:59:59.999Z"
    # One millisecond later is refused at the door, with the reason (and quarantined, not lost).
    late = server.http.post(f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}",
                            data=encode(destroyed_body("g-too-late", event_time=MAX_EVENT_TIME_MS + 1)),
                            headers={"Content-Type": "application/json"})
    assert late.status_code == 400 and "EventTime" in late.json()["ErrorInfo"]
