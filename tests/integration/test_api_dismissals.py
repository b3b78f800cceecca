"""`/v1/dismissals`: requesting (one, batch, idempotent), reading, long-polling, and listing with filters."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import update

from receiver.api.common import HUB_EXTENSION
from receiver.models import Confirmation, Dismissal, Source, Status, utcnow
from receiver.schemas.api import encode_cursor
from tests.conftest import API_TOKEN, TEST_SDKAPPID

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
FIELDS = ["id", "group_id", "sdkappid", "source", "status", "confirmation", "reason", "requested_by", "requested_at",
          "sent_at", "confirmed_at", "attempts", "last_error", "callback"]


def add(db, **kw) -> str:
    time.sleep(0.002)  # ids are ULIDs: random within one millisecond, ordered across them
    values = dict(group_id="g", sdkappid=TEST_SDKAPPID, source=Source.API, status=Status.QUEUED,
                  requested_at=utcnow(), attempts=0)
    values.update(kw)
    with db.session_scope() as s:
        d = Dismissal(**values)
        s.add(d)
        s.flush()
        return d.id


def post(client, body, **headers):
    return client.post("/v1/dismissals", json=body, headers={**AUTH, **headers})


def test_post_queues_a_dismissal_and_answers_202_in_the_contract_shape(client):
    resp = post(client, {"group_id": "@TGS#AAA", "reason": "spam", "requested_by": "moderation"})
    assert resp.status_code == 202
    d = resp.get_json()
    assert list(d) == FIELDS
    assert (d["group_id"], d["sdkappid"], d["source"], d["status"], d["reason"], d["requested_by"]) == \
        ("@TGS#AAA", TEST_SDKAPPID, "api", "queued", "spam", "moderation")
    assert TIME.match(d["requested_at"])
    assert (d["sent_at"], d["confirmed_at"], d["confirmation"], d["last_error"], d["callback"], d["attempts"]) == \
        (None, None, None, None, None, 0)


def test_post_for_a_group_with_an_open_dismissal_returns_it_with_200(client):
    first = post(client, {"group_id": "g-open"}).get_json()
    again = post(client, {"group_id": "g-open", "reason": "other"})
    assert again.status_code == 200
    assert again.get_json()["id"] == first["id"]


def test_idempotency_key_returns_the_same_dismissal_and_refuses_another_body(client, db):
    first = post(client, {"group_id": "g-key"}, **{"Idempotency-Key": "k1"})
    assert first.status_code == 202
    with db.session_scope() as s:  # even after it closed, the key answers with the same record
        s.execute(update(Dismissal).values(status=Status.CONFIRMED, confirmation=Confirmation.PROBE))
    repeat = post(client, {"group_id": "g-key"}, **{"Idempotency-Key": "k1"})
    assert repeat.status_code == 200 and repeat.get_json()["id"] == first.get_json()["id"]
    conflict = post(client, {"group_id": "g-key", "reason": "changed"}, **{"Idempotency-Key": "k1"})
    assert conflict.status_code == 422
    body = conflict.get_json()
    assert body["code"] == 422 and "Idempotency-Key" in body["errors"]["headers"]


@pytest.mark.parametrize("body,where", [
    ({}, "group_id"),
    ({"group_id": ""}, "group_id"),
    ({"group_id": "x" * 49}, "group_id"),
    ({"group_id": "caf\u00e9"}, "group_id"),
    ({"group_id": 12}, "group_id"),
    ({"group_id": "g", "unknown": 1}, "unknown"),
    ({"group_id": "g", "requested_by": "x" * 201}, "requested_by"),
])
def test_post_refuses_invalid_bodies_with_422(client, body, where):
    resp = post(client, body)
    assert resp.status_code == 422
    err = resp.get_json()
    assert set(err) == {"code", "status", "message", "errors"}
    assert where in err["errors"]["json"]


def test_post_refuses_bad_json_with_400_and_an_oversized_key_with_422(client):
    resp = client.post("/v1/dismissals", data=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["code"] == 400
    resp = post(client, {"group_id": "g"}, **{"Idempotency-Key": "k" * 201})
    assert resp.status_code == 422 and "Idempotency-Key" in resp.get_json()["errors"]["headers"]


@pytest.mark.parametrize("raw", [
    b"[" * 100_000,  # json.loads: RecursionError
    b'{"a":' * 50_000,
    b'{"group_id": ' + b"1" * 5_000 + b"}",  # json.loads: ValueError (over 4,300 digits)
])
@pytest.mark.parametrize("path", ["/v1/dismissals", "/v1/dismissals/batch"])
def test_json_that_python_cannot_read_is_400_not_500(client, path, raw):
    resp = client.post(path, data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.get_json() == {"code": 400, "status": "Bad Request", "message": "The request body is not valid JSON.",
                               "errors": {"json": ["Invalid JSON body."]}}


def test_body_over_the_size_limit_is_413_in_our_shape(client):
    resp = client.post("/v1/dismissals/batch", data=b"[" + b" " * (5 * 1024 * 1024) + b"]",
                       headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.get_json()["code"] == 413


def test_batch_queues_each_distinct_group_in_order_and_returns_open_ones(client):
    existing = post(client, {"group_id": "b1"}).get_json()
    resp = client.post("/v1/dismissals/batch", json={"group_ids": ["b0", "b1", "b2", "b0"], "reason": "cleanup"},
                       headers=AUTH)
    assert resp.status_code == 202
    items = resp.get_json()["items"]
    assert [i["group_id"] for i in items] == ["b0", "b1", "b2"]
    assert items[1]["id"] == existing["id"]
    assert items[0]["reason"] == "cleanup" and items[0]["status"] == "queued"


def test_batch_of_ten_thousand_is_accepted_and_more_is_refused(client):
    ids = [f"bulk-{i:05d}" for i in range(10_000)]
    resp = client.post("/v1/dismissals/batch", json={"group_ids": ids}, headers=AUTH)
    assert resp.status_code == 202 and len(resp.get_json()["items"]) == 10_000
    resp = client.post("/v1/dismissals/batch", json={"group_ids": ids + ["one-more"]}, headers=AUTH)
    assert resp.status_code == 422 and "group_ids" in resp.get_json()["errors"]["json"]


@pytest.mark.parametrize("body", [{"group_ids": []}, {"group_ids": ["ok", "bad\u00e9"]}, {"group_ids": "g"}, {}])
def test_batch_refuses_invalid_bodies(client, body):
    resp = client.post("/v1/dismissals/batch", json=body, headers=AUTH)
    assert resp.status_code == 422 and "group_ids" in resp.get_json()["errors"]["json"]


def test_get_one_shows_errors_and_the_callback(client, db):
    failed = add(db, status=Status.FAILED, attempts=2, last_error_code=10004, last_error_info="bad GroupId",
                 sent_at=utcnow())
    d = client.get(f"/v1/dismissals/{failed}", headers=AUTH).get_json()
    assert d["last_error"] == {"code": 10004, "info": "bad GroupId"} and d["attempts"] == 2
    assert TIME.match(d["sent_at"])
    assert client.get("/v1/dismissals/01ZZZZZZZZZZZZZZZZZZZZZZZZ", headers=AUTH).status_code == 404


def test_get_one_with_wait_returns_at_once_when_final_or_after_the_wait(client, db):
    done = add(db, status=Status.CONFIRMED, confirmation=Confirmation.PROBE, confirmed_at=utcnow())
    started = time.monotonic()
    assert client.get(f"/v1/dismissals/{done}?wait=30", headers=AUTH).get_json()["status"] == "confirmed"
    assert time.monotonic() - started < 1
    pending = add(db, group_id="pending")
    started = time.monotonic()
    assert client.get(f"/v1/dismissals/{pending}?wait=0.5", headers=AUTH).get_json()["status"] == "queued"
    assert 0.5 <= time.monotonic() - started < 3
    client.application.extensions[HUB_EXTENSION].stop()


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan", "inf"])
def test_wait_out_of_range_is_422(client, db, wait):
    resp = client.get(f"/v1/dismissals/{add(db)}?wait={wait}", headers=AUTH)
    assert resp.status_code == 422 and "wait" in resp.get_json()["errors"]["query"]


def test_many_waiters_wake_on_confirmation_without_holding_connections(committed_db, app_factory, live_server_factory):
    """More waiters than the connection pool holds: they only work because none holds a connection."""
    app = app_factory(committed_db)
    server = live_server_factory(app, threaded=True)
    pool = committed_db.engine.pool
    waiters = pool.size() + pool._max_overflow + 10
    ids = [add(committed_db, group_id=f"w{i}", status=Status.AWAITING_CALLBACK) for i in range(waiters)]
    results: dict[str, tuple[str, float]] = {}

    def wait_for(dismissal_id):
        started = time.monotonic()
        resp = requests.get(f"{server.url}/v1/dismissals/{dismissal_id}?wait=20", headers=AUTH, timeout=30)
        results[dismissal_id] = (resp.json()["status"], time.monotonic() - started)

    threads = [threading.Thread(target=wait_for, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    hub = app.extensions[HUB_EXTENSION]
    deadline = time.monotonic() + 15
    while hub.waiting < waiters and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.waiting == waiters
    confirmed_at = time.monotonic()
    with committed_db.session_scope() as s:
        s.execute(update(Dismissal).values(status=Status.CONFIRMED, confirmation=Confirmation.CALLBACK,
                                           confirmed_at=utcnow()))
    for t in threads:
        t.join(30)
    hub.stop()
    assert {status for status, _ in results.values()} == {"confirmed"} and len(results) == waiters
    assert time.monotonic() - confirmed_at < 10


def test_list_is_newest_first_with_every_filter(client, db):
    now = utcnow()
    a = add(db, group_id="ga", status=Status.QUEUED)
    b = add(db, group_id="gb", status=Status.CONFIRMED, confirmation=Confirmation.CALLBACK, confirmed_at=now)
    c = add(db, group_id="ga", source=Source.EXTERNAL, status=Status.CONFIRMED, requested_at=None,
            confirmation=Confirmation.CALLBACK, confirmed_at=now)

    def ids(query=""):
        resp = client.get(f"/v1/dismissals{query}", headers=AUTH)
        assert resp.status_code == 200, resp.get_json()
        return [d["id"] for d in resp.get_json()["items"]]

    assert ids() == [c, b, a]
    assert ids("?status=confirmed") == [c, b]
    assert ids("?source=external") == [c]
    assert ids("?group_id=ga") == [c, a]
    assert ids("?group_id=ga&status=queued") == [a]
    assert ids("?since=" + (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")) == [c, b, a]
    assert ids("?until=" + (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")) == []
    assert ids("?since=2999-01-01T00:00:00%2B08:00") == []


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("cursor=!!!", "cursor"),
    ("cursor=" + encode_cursor("not-an-id"), "cursor"), ("since=2026-13-01T00:00:00Z", "since"),
    ("until=2026-11-29", "until"), ("since=2026-11-29T20:41:08", "since"), ("status=done", "status"),
    ("source=me", "source"), ("colour=red", "colour"),
])
def test_list_refuses_bad_parameters_with_422(client, query, field):
    resp = client.get(f"/v1/dismissals?{query}", headers=AUTH)
    assert resp.status_code == 422
    assert field in resp.get_json()["errors"]["query"]


def test_pages_neither_skip_nor_repeat_rows_while_new_rows_arrive(client, db):
    existing = {add(db, group_id=f"p{i}") for i in range(23)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(f"/v1/dismissals{query}", headers=AUTH).get_json()
        seen.extend(d["id"] for d in body["items"])
        add(db, group_id=f"new{pages}")
        post(client, {"group_id": f"api-new{pages}"})
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)  # strictly newest first: nothing repeated
    assert len(seen) == len(set(seen))
    assert existing <= set(seen)
    assert pages == 6


def test_stats_counts_and_latency_percentiles(client, db):
    base = utcnow() - timedelta(hours=1)
    for i in range(1, 101):
        add(db, group_id=f"s{i}", status=Status.CONFIRMED, confirmation=Confirmation.CALLBACK if i % 2 else Confirmation.PROBE,
            requested_at=base, confirmed_at=base + timedelta(seconds=i))
    # Not part of the latency: known gone before we sent, external, failed.
    add(db, group_id="s-gone", status=Status.CONFIRMED, confirmation=Confirmation.ALREADY_GONE,
        requested_at=base, confirmed_at=base + timedelta(hours=1))
    add(db, group_id="s-ext", source=Source.EXTERNAL, status=Status.CONFIRMED, confirmation=Confirmation.CALLBACK,
        requested_at=None, confirmed_at=base)
    add(db, group_id="s-fail", status=Status.FAILED)
    stats = client.get("/v1/stats", headers=AUTH).get_json()
    assert stats["dismissals_by_status"] == {"queued": 0, "sending": 0, "retrying": 0, "awaiting_callback": 0,
                                             "confirmed": 102, "failed": 1, "unconfirmed": 0}
    assert stats["dismissals_by_source"] == {"api": 102, "external": 1}
    assert stats["confirmation_latency_seconds"] == {"count": 100, "p50": 50.5, "p95": 95.05, "p99": 99.01}


def test_stats_of_an_empty_database(client):
    stats = client.get("/v1/stats", headers=AUTH).get_json()
    assert stats["confirmation_latency_seconds"] == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert set(stats["dismissals_by_status"].values()) == {0}
