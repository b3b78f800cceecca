"""`POST /im/callback` over real HTTP on loopback: every row of CONTRACT §3."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from receiver.models import Callback, CallbackState, Confirmation, Dismissal, GroupMember, Source, Status, utcnow
from tests.conftest import TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode

TOKEN = "callback-token-xyz"


def post(server, body, query=None, **kw):
    query = query if query is not None else callback_query(TEST_SDKAPPID)
    data = body if isinstance(body, (bytes, str)) else encode(body)
    return server.http.post(f"{server.url}/im/callback?{query}", data=data,
                            headers={"Content-Type": "application/json"}, **kw)


def count(db, model, *where):
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def assert_envelope(resp, status, ok):
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"ActionStatus", "ErrorCode", "ErrorInfo"}
    assert body["ActionStatus"] == ("OK" if ok else "FAIL")
    assert (body["ErrorCode"] == 0) == ok
    return body


def test_valid_callback_is_stored_and_recorded_as_external_dismissal(live, db):
    resp = post(live, destroyed_body("@TGS#AAA"))
    assert_envelope(resp, 200, True)
    with db.session_scope() as s:
        cb = s.scalars(select(Callback)).one()
        assert (cb.state, cb.group_id, cb.group_type, cb.owner_account, cb.name, cb.member_count) == \
            (CallbackState.ACCEPTED, "@TGS#AAA", "Public", "leckie", "MyFirstGroup", 3)
        assert cb.opt_platform == "RESTAPI" and cb.client_ip == "127.0.0.1"
        assert cb.event_time.isoformat().startswith("2022-12-09T08:26:54.123")
        assert json.loads(cb.raw_body)["GroupId"] == "@TGS#AAA"
        d = s.scalars(select(Dismissal)).one()
        assert (d.source, d.status, d.confirmation, d.callback_id) == (Source.EXTERNAL, Status.CONFIRMED, Confirmation.CALLBACK, cb.id)
        accounts = s.scalars(select(GroupMember.account).where(GroupMember.dismissal_id == d.id).order_by(GroupMember.account)).all()
        assert accounts == ["bob", "leckie", "peter"]


def test_redelivery_is_acknowledged_but_stored_once(live, db):
    for _ in range(3):
        assert_envelope(post(live, destroyed_body("@TGS#DUP")), 200, True)
    with db.session_scope() as s:
        cb = s.scalars(select(Callback)).one()
        assert cb.duplicates == 2
    assert count(db, Dismissal) == 1
    assert count(db, GroupMember) == 3


def test_same_group_with_a_new_event_time_is_a_new_event(live, db):
    # A custom group ID can be re-created and dismissed again later.
    post(live, destroyed_body("custom-1", event_time=1670574414123))
    post(live, destroyed_body("custom-1", event_time=1670574999999))
    assert count(db, Callback) == 2
    assert count(db, Dismissal) == 2


@pytest.mark.parametrize("command", ["Group.CallbackBeforeSendMsg", "Group.CallbackBeforeCreateGroup",
                                     "C2C.CallbackAfterSendMsg", "State.StateChange"])
def test_other_commands_are_acknowledged_at_once_and_not_stored(live, db, command):
    resp = post(live, b"this is not even json", callback_query(TEST_SDKAPPID, command))
    assert_envelope(resp, 200, True)
    assert count(db, Callback) == 0


def test_foreign_sdkappid_is_forbidden_and_nothing_stored(live, db, app):
    resp = post(live, destroyed_body(), callback_query(TEST_SDKAPPID + 1))
    body = assert_envelope(resp, 403, False)
    assert "SdkAppid" in body["ErrorInfo"]
    assert count(db, Callback) == 0
    metrics = app.extensions["receiver.metrics"]
    assert metrics.callbacks.labels(command="Group.CallbackAfterGroupDestroyed", outcome="rejected_sdkappid_mismatch")._value.get() == 1


@pytest.fixture
def signed_live(app_factory, db, live_server_factory):
    from receiver.config import Secret
    return live_server_factory(app_factory(db, im_callback_tokens=(Secret(TOKEN),)))


def test_valid_sign_is_accepted(signed_live, db):
    assert_envelope(post(signed_live, destroyed_body(), callback_query(TEST_SDKAPPID, token=TOKEN)), 200, True)
    assert count(db, Callback) == 1


@pytest.mark.parametrize("query_kw", [
    {},  # Sign and RequestTime missing
    {"token": "wrong-token"},
    {"token": TOKEN, "request_time": -120},  # relative to now, resolved below
    {"token": TOKEN, "request_time": +120},
])
def test_missing_wrong_or_stale_sign_is_unauthorized(signed_live, db, query_kw):
    if "request_time" in query_kw:
        query_kw = {**query_kw, "request_time": int(time.time()) + query_kw["request_time"]}
    resp = post(signed_live, destroyed_body(), callback_query(TEST_SDKAPPID, **query_kw))
    body = assert_envelope(resp, 401, False)
    assert TOKEN not in body["ErrorInfo"]
    assert count(db, Callback) == 0


@pytest.mark.parametrize("raw,needle", [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe\x00garbage", "UTF-8"),
    (b"[1, 2]", "must be an object"),
    (b'{"GroupId": "a", "GroupId": "b", "CallbackCommand": "Group.CallbackAfterGroupDestroyed", "Type": "Public"}', "duplicate key"),
    (b"[" * 100000 + b"]" * 100000, "malformed JSON"),
    (encode({"CallbackCommand": "Group.CallbackAfterGroupDestroyed", "Type": "Public"}), "GroupId"),
    (encode(destroyed_body(EventTime="yesterday")), "EventTime"),
    (encode(destroyed_body(EventTime="1" * 5000)), "EventTime"),  # int() refuses over 4,300 digits
    (encode(destroyed_body()).replace(b'"Type"', b'"X": NaN, "Type"'), "NaN is not JSON"),
    (encode(destroyed_body()).replace(b'"Type"', b'"X": -Infinity, "Type"'), "-Infinity is not JSON"),
    (encode(destroyed_body(MemberList=[{"Member_Account": None}])), "MemberList"),
    (encode(destroyed_body(CallbackCommand="Group.CallbackAfterGroupInfoChanged")), "does not match"),
])
def test_broken_requests_are_quarantined_with_the_reason(live, db, raw, needle):
    resp = post(live, raw)
    body = assert_envelope(resp, 400, False)
    assert needle in body["ErrorInfo"]
    with db.session_scope() as s:
        q = s.scalars(select(Callback)).one()
        assert q.state == CallbackState.QUARANTINED
        assert needle in q.quarantine_reason
        assert q.raw_body == raw
        assert "SdkAppid=" in q.query_string
    assert count(db, Dismissal) == 0


def test_body_over_one_mib_is_refused(live, db):
    big = destroyed_body(members=[f"user{i:07d}" for i in range(40000)])
    raw = encode(big)
    assert len(raw) > 1024 * 1024
    assert_envelope(post(live, raw), 413, False)
    assert count(db, Callback) == 0


def test_callback_confirms_our_open_dismissal(live, db):
    with db.session_scope() as s:
        d = Dismissal(group_id="@TGS#OURS", sdkappid=TEST_SDKAPPID, source=Source.API, status=Status.AWAITING_CALLBACK,
                      requested_at=utcnow() - timedelta(seconds=2), sent_at=utcnow(), attempts=1)
        s.add(d)
    post(live, destroyed_body("@TGS#OURS", event_time=int(time.time() * 1000)))
    with db.session_scope() as s:
        rows = s.scalars(select(Dismissal)).all()
        assert len(rows) == 1
        assert (rows[0].status, rows[0].confirmation, rows[0].source) == (Status.CONFIRMED, Confirmation.CALLBACK, Source.API)
        assert rows[0].callback_id is not None and rows[0].confirmed_at is not None


@pytest.mark.parametrize("status", [Status.FAILED, Status.UNCONFIRMED, Status.QUEUED, Status.SENDING, Status.RETRYING])
def test_evidence_wins_over_any_state(live, db, status):
    with db.session_scope() as s:
        s.add(Dismissal(group_id="g-evidence", sdkappid=TEST_SDKAPPID, source=Source.API, status=status,
                        requested_at=utcnow() - timedelta(seconds=1), attempts=1))
    post(live, destroyed_body("g-evidence", event_time=int(time.time() * 1000)))
    with db.session_scope() as s:
        d = s.scalars(select(Dismissal)).one()
        assert (d.status, d.confirmation) == (Status.CONFIRMED, Confirmation.CALLBACK)


def test_callback_for_a_dismissal_older_than_our_request_is_external(live, db):
    """A late callback of a user's dismissal must not be passed off as ours."""
    with db.session_scope() as s:
        s.add(Dismissal(group_id="g-late", sdkappid=TEST_SDKAPPID, source=Source.API, status=Status.QUEUED,
                        requested_at=utcnow(), attempts=0))
    post(live, destroyed_body("g-late", event_time=int((time.time() - 3600) * 1000)))
    with db.session_scope() as s:
        rows = {d.source: d for d in s.scalars(select(Dismissal))}
        assert rows[Source.EXTERNAL].confirmation == Confirmation.CALLBACK
        assert rows[Source.API].status == Status.CONFIRMED
        assert rows[Source.API].confirmation == Confirmation.ALREADY_GONE
        assert rows[Source.API].callback_id is None


@pytest.mark.parametrize("older", [Status.UNCONFIRMED, Status.FAILED])
def test_a_late_callback_confirms_the_older_request_it_answers(live, db, older):
    """Asked again after the first request went unconfirmed: the late callback of the first
    dismissal makes the second moot and confirms the first (evidence wins), no external row."""
    first_asked = utcnow() - timedelta(minutes=10)
    with db.session_scope() as s:
        s.add(Dismissal(group_id="g-asked-twice", sdkappid=TEST_SDKAPPID, source=Source.API, status=older,
                        requested_at=first_asked, attempts=1))
        s.add(Dismissal(group_id="g-asked-twice", sdkappid=TEST_SDKAPPID, source=Source.API, status=Status.QUEUED,
                        requested_at=utcnow(), attempts=0))
    event = first_asked + timedelta(seconds=30)
    assert_envelope(post(live, destroyed_body("g-asked-twice", event_time=int(event.timestamp() * 1000))), 200, True)
    with db.session_scope() as s:
        rows = sorted(s.scalars(select(Dismissal)), key=lambda d: d.requested_at)
        assert [d.source for d in rows] == [Source.API, Source.API]  # nothing recorded as external
        assert (rows[0].status, rows[0].confirmation) == (Status.CONFIRMED, Confirmation.CALLBACK)
        assert rows[0].callback_id is not None
        assert (rows[1].status, rows[1].confirmation, rows[1].callback_id) == \
            (Status.CONFIRMED, Confirmation.ALREADY_GONE, None)


def test_eight_threads_posting_the_same_callback_store_one_row(committed_db, app_factory, live_server_factory):
    server = live_server_factory(app_factory(committed_db), threaded=True)
    url = f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}"
    raw = encode(destroyed_body("@TGS#RACE"))
    barrier = threading.Barrier(8)
    results: list[int] = []

    def worker():
        with requests.Session() as http:
            barrier.wait()
            results.append(http.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=30).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 1
        assert s.scalar(select(Callback.duplicates)) == 7
        assert s.scalar(select(func.count()).select_from(Dismissal)) == 1
        assert s.scalar(select(func.count()).select_from(GroupMember)) == 3


def test_a_finished_request_does_not_claim_a_dismissal_from_much_later(live, db):
    """A custom group ID re-created and dismissed by someone else days later is not ours."""
    with db.session_scope() as s:
        s.add(Dismissal(group_id="reused-id", sdkappid=TEST_SDKAPPID, source=Source.API, status=Status.CONFIRMED,
                        confirmation=Confirmation.PROBE, requested_at=utcnow() - timedelta(days=3),
                        confirmed_at=utcnow() - timedelta(days=3), attempts=1))
    post(live, destroyed_body("reused-id", event_time=int(time.time() * 1000)))
    with db.session_scope() as s:
        rows = {d.source: d for d in s.scalars(select(Dismissal))}
        assert rows[Source.API].callback_id is None and rows[Source.API].confirmation == Confirmation.PROBE
        assert rows[Source.EXTERNAL].callback_id is not None


def test_other_methods_get_the_envelope_and_405(live, db):
    # The callback URL is served outside Flask; it still answers every method in IM's envelope.
    for method in ("GET", "PUT", "DELETE"):
        resp = live.http.request(method, f"{live.url}/im/callback?{callback_query(TEST_SDKAPPID)}")
        assert_envelope(resp, 405, False)
        assert resp.headers["Allow"] == "POST" and resp.headers["X-Request-ID"]
    assert count(db, Callback) == 0


@pytest.mark.parametrize("change, status, info", [
    ({"SdkAppid": f"+{TEST_SDKAPPID}"}, 403, "SdkAppid does not match"),
    ({"SdkAppid": f"{TEST_SDKAPPID:_}"}, 403, "SdkAppid does not match"),
    ({"RequestTime": "²"}, 401, "RequestTime must be Unix seconds"),  # a digit to str.isdigit, not to int()
    ({"RequestTime": "9" * 400}, 401, "RequestTime must be Unix seconds"),  # float(): OverflowError
    ({"RequestTime": "9" * 5000}, 401, "RequestTime must be Unix seconds"),  # int(): ValueError
])
def test_numbers_int_would_read_but_are_not_plain_digits_are_refused_with_the_reason(signed_live, db, change, status,
                                                                                    info):
    """Not a 500, nor a 400 "could not be recorded" after the checks had let them through."""
    resp = post(signed_live, destroyed_body("g-digits"), callback_query(TEST_SDKAPPID, token=TOKEN, **change))
    assert assert_envelope(resp, status, False)["ErrorInfo"].startswith(info)
    assert count(db, Callback) == 0


def test_a_chunked_body_is_read_whole(live, db):
    # No Content-Length: the body arrives in chunks and must still be read to its end.
    raw = encode(destroyed_body("@TGS#CHUNKED"))
    pieces = iter([raw[:10], raw[10:40], raw[40:]])
    resp = live.http.post(f"{live.url}/im/callback?{callback_query(TEST_SDKAPPID)}", data=pieces,
                          headers={"Content-Type": "application/json"})
    assert_envelope(resp, 200, True)
    with db.session_scope() as s:
        assert s.scalars(select(Callback.group_id)).one() == "@TGS#CHUNKED"


def test_the_rest_of_the_service_is_still_flask(live):
    assert live.http.get(f"{live.url}/healthz").status_code == 200
    assert live.http.post(f"{live.url}/im/callback/", data=b"{}").status_code == 404  # exact path only
