"""Hostile input to /im/callback: never a 5xx, always Tencent's envelope, nothing accepted unless valid."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from sqlalchemy import func, select

from receiver.callbacks.verify import compute_sign
from receiver.config import Secret
from receiver.models import Callback, CallbackState, Dismissal
from receiver.schemas.tencent import GROUP_DESTROYED, GroupDestroyedSchema
from tests.conftest import TEST_SDKAPPID
from tests.helpers import callback_query

TOKEN = "fuzz-callback-token"
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# -- bodies ---------------------------------------------------------------------------------------

text = st.text(max_size=40)
# Lone surrogates and NUL are legal in JSON strings (\ud800, \u0000) but not in every database.
nasty_text = st.one_of(text, st.sampled_from(["\x00", "g\x00g", "\ud800", "a\udfffb", "\u202e", " ", "",
                                              "x" * 201, "@TGS#" + "9" * 300]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False), nasty_text)
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(text, inner, max_size=4)), max_leaves=12)
member = st.one_of(st.fixed_dictionaries({"Member_Account": nasty_text}), anything)


@st.composite
def near_valid(draw) -> dict:
    """A GroupDestroyed body with some fields dropped, retyped or stretched."""
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": draw(st.text(min_size=1, max_size=30)),
            "Type": draw(st.sampled_from(["Public", "Private", "ChatRoom", "AVChatRoom", "Community"])),
            "Owner_Account": "owner", "Name": "n", "EventTime": draw(st.integers(0, 2**53 - 1)),
            "MemberList": [{"Member_Account": f"u{i}"} for i in range(draw(st.integers(0, 3)))]}
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["drop", "retype", "nasty"]))
        if action == "drop":
            del body[key]
        elif action == "retype":
            body[key] = draw(anything)
        else:
            body[key] = draw(nasty_text)
    if draw(st.booleans()):
        body["MemberList"] = [{"Member_Account": f"m{i}"} for i in range(draw(st.sampled_from([500, 5000])))]
    if draw(st.booleans()):
        body[draw(text)] = draw(anything)  # an unknown field Tencent might add
    if draw(st.integers(0, 9)) == 0:
        body["EventTime"] = draw(st.sampled_from(["123", " 17 ", "1e3", "-1", "NaN", 2**53, 1.5, True, [1]]))
    return body


def deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


raw_bodies = st.one_of(
    st.builds(lambda b: json.dumps(b).encode(), near_valid()),
    st.builds(lambda b: json.dumps(b, ensure_ascii=False).encode("utf-8", "surrogatepass"), near_valid()),
    st.builds(lambda b: json.dumps(b).encode(), anything),
    st.binary(max_size=200),
    st.builds(lambda b: b"\xff\xfe" + b, st.binary(max_size=20)),  # invalid UTF-8
    st.builds(deep, st.sampled_from([100, 5000, 100_000])),
    st.builds(lambda g: ('{"CallbackCommand":"%s","GroupId":"%s","GroupId":"x","Type":"Public"}'
                         % (GROUP_DESTROYED, g)).encode(), st.text(alphabet="abc", max_size=5)),  # duplicate keys
    st.just(b""), st.just(b"null"), st.just(b"[]"), st.just(b'"str"'), st.just(b"1e999999"),
    st.builds(lambda n: b" " * n, st.sampled_from([1, 1024 * 1024 + 1])),  # over 1 MiB
)

# -- query strings --------------------------------------------------------------------------------

weird_values = st.one_of(text, st.sampled_from(["", " ", "0", "-1", "1e9", "１４００", "99999999999999999999999",
                                                 str(TEST_SDKAPPID) + "\x00", "%00", "\x00"]))


@st.composite
def queries(draw) -> tuple[str, str | None]:
    """A query string (and the CallbackCommand it carries, if one)."""
    params: list[tuple[str, str]] = []
    sdkappid = draw(st.one_of(st.just(str(TEST_SDKAPPID)), st.just(str(TEST_SDKAPPID)), weird_values))
    command = draw(st.one_of(st.just(GROUP_DESTROYED), st.just(GROUP_DESTROYED), st.none(),
                             st.sampled_from(["Group.CallbackBeforeCreateGroup", "", "C2C.CallbackAfterSendMsg"]),
                             weird_values))
    if draw(st.integers(0, 9)):
        params.append(("SdkAppid", sdkappid))
    if command is not None:
        params.append(("CallbackCommand", command))
    params += [("contenttype", "json"), ("ClientIP", draw(weird_values)), ("OptPlatform", draw(weird_values))]
    sign_mode = draw(st.sampled_from(["valid", "valid", "valid", "missing", "garbage", "stale", "weird_time"]))
    now = str(int(time.time()))
    if sign_mode == "valid":
        params += [("RequestTime", now), ("Sign", compute_sign(TOKEN, now))]
    elif sign_mode == "garbage":
        params += [("RequestTime", now), ("Sign", draw(weird_values))]
    elif sign_mode == "stale":
        old = str(int(time.time()) - 3600)
        params += [("RequestTime", old), ("Sign", compute_sign(TOKEN, old))]
    elif sign_mode == "weird_time":
        rt = draw(weird_values)
        params += [("RequestTime", rt), ("Sign", compute_sign(TOKEN, rt))]
    for _ in range(draw(st.integers(0, 2))):  # repeated and unknown parameters
        params.append((draw(st.sampled_from(["SdkAppid", "CallbackCommand", "Sign", "x", ""])), draw(weird_values)))
    query = urlencode(params)
    if draw(st.integers(0, 9)) == 0:
        query += draw(st.sampled_from(["&%ff%fe=%c3%28", "&&&", "&=", "&SdkAppid", "&a=%", "&%00=%00"]))
    return query, command


content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                 "application/octet-stream", None, "\u00e9/\u00e9", "application/json; charset=latin-1"])


def counts(db) -> tuple[int, int, int]:
    with db.session_scope() as s:
        accepted = s.scalar(select(func.count()).select_from(Callback).where(Callback.state == CallbackState.ACCEPTED))
        quarantined = s.scalar(select(func.count()).select_from(Callback)
                               .where(Callback.state == CallbackState.QUARANTINED))
        dismissals = s.scalar(select(func.count()).select_from(Dismissal))
    return accepted, quarantined, dismissals


def _unique_keys(pairs):
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def is_valid(body: bytes) -> bool:
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
        GroupDestroyedSchema().load(data)
    except (ValueError, RecursionError, ValidationError, AttributeError, TypeError):
        return False
    return isinstance(data, dict) and data.get("CallbackCommand") == GROUP_DESTROYED


def assert_envelope(resp) -> dict:
    assert resp.status_code < 500, resp.get_data()[:500]
    assert resp.mimetype == "application/json"
    env = resp.get_json()
    assert set(env) == {"ActionStatus", "ErrorCode", "ErrorInfo"}, env
    assert isinstance(env["ErrorCode"], int) and isinstance(env["ErrorInfo"], str)
    assert env["ActionStatus"] == ("OK" if env["ErrorCode"] == 0 else "FAIL")
    assert (resp.status_code == 200) == (env["ErrorCode"] == 0)
    return env


@pytest.fixture
def signed_client(app_factory, db):
    return app_factory(db, im_callback_tokens=(Secret(TOKEN),)).test_client()


def post_counting(client, db, query: str, body: bytes, content_type):
    """POST a callback; return the response, its envelope, and what it added (accepted, quarantined, dismissals)."""
    before = counts(db)
    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.post(f"/im/callback?{query}", data=body, headers=headers)
    env = assert_envelope(resp)
    event(f"{resp.status_code} {env['ErrorInfo'][:30]}")
    return resp, env, tuple(a - b for a, b in zip(counts(db), before))


@FUZZ
@given(query=queries(), body=raw_bodies, content_type=content_types)
def test_any_callback_request_gets_the_envelope_and_only_valid_bodies_are_accepted(signed_client, db, query, body,
                                                                                  content_type):
    q, command = query
    resp, env, (accepted, quarantined, dismissals) = post_counting(signed_client, db, q, body, content_type)
    if resp.status_code == 200:
        assert quarantined == 0
        assert accepted <= 1 and dismissals <= 1
        if accepted:
            assert command in (None, GROUP_DESTROYED) and is_valid(body)
    else:
        assert accepted == 0 and dismissals == 0
        assert quarantined == (1 if resp.status_code == 400 else 0)


@FUZZ
@given(command=st.sampled_from([GROUP_DESTROYED, GROUP_DESTROYED, GROUP_DESTROYED, None]), body=raw_bodies,
       content_type=content_types)
def test_hostile_bodies_behind_a_valid_query_are_quarantined_never_accepted(signed_client, db, command, body,
                                                                           content_type):
    now = str(int(time.time()))
    params = [("SdkAppid", str(TEST_SDKAPPID)), ("contenttype", "json"), ("ClientIP", "1.2.3.4"),
              ("OptPlatform", "RESTAPI"), ("RequestTime", now), ("Sign", compute_sign(TOKEN, now))]
    if command:
        params.append(("CallbackCommand", command))
    resp, env, (accepted, quarantined, dismissals) = post_counting(signed_client, db, urlencode(params), body,
                                                                   content_type)
    if is_valid(body):
        assert resp.status_code == 200 and quarantined == 0, (env, body[:300], content_type, command)
        assert accepted + dismissals in (0, 2)  # stored and recorded, or a duplicate of an earlier example
    elif resp.status_code == 200:  # a body naming another command, without one in the query: ignored
        assert command is None and (accepted, quarantined, dismissals) == (0, 0, 0)
    elif resp.status_code == 413:
        assert len(body) > 1024 * 1024 and (accepted, quarantined, dismissals) == (0, 0, 0)
    else:
        assert resp.status_code == 400 and env["ErrorInfo"]
        assert (accepted, quarantined, dismissals) == (0, 1, 0)


@pytest.mark.parametrize("event_time", [2**53 - 1, 253402300800000, "999999999999999"])
def test_event_time_beyond_year_9999_is_quarantined_not_a_500(signed_client, db, event_time):
    # Found by the fuzzer: the schema took any integer below 2**53 ms, and datetime stops at 9999.
    query = callback_query(TEST_SDKAPPID, token=TOKEN)
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": "g-far-future", "Type": "Public", "EventTime": event_time}
    before = counts(db)
    resp = signed_client.post(f"/im/callback?{query}", json=body)
    env = assert_envelope(resp)
    assert resp.status_code == 400 and "EventTime" in env["ErrorInfo"]
    assert tuple(a - b for a, b in zip(counts(db), before)) == (0, 1, 0)


NASTY_STRINGS = ["g\x00g", "\ud800", "a\udfffb"]


@pytest.mark.parametrize("field", ["GroupId", "Name", "Owner_Account", "Member_Account", "Type"])
@pytest.mark.parametrize("value", NASTY_STRINGS, ids=["nul", "lone-high-surrogate", "lone-low-surrogate"])
def test_nul_and_lone_surrogates_in_body_strings_are_handled(signed_client, db, field, value):
    # JSON allows \u0000 and unpaired \ud800 escapes; PostgreSQL text and UTF-8 encoders do not.
    query = callback_query(TEST_SDKAPPID, token=TOKEN)
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": "g-nasty", "Type": "Public", "Name": "n",
            "Owner_Account": "o", "EventTime": 1700000000000, "MemberList": [{"Member_Account": "m"}]}
    if field == "Member_Account":
        body["MemberList"] = [{"Member_Account": value}]
    else:
        body[field] = value
    resp = signed_client.post(f"/im/callback?{query}", data=json.dumps(body).encode(), content_type="application/json")
    assert_envelope(resp)


@pytest.mark.parametrize("param", ["ClientIP", "OptPlatform", "CallbackCommand", "contenttype", "x"])
def test_nul_in_query_parameters_is_handled(signed_client, db, param):
    now = str(int(time.time()))
    params = {"SdkAppid": TEST_SDKAPPID, "CallbackCommand": GROUP_DESTROYED, "RequestTime": now,
              "Sign": compute_sign(TOKEN, now), "ClientIP": "1.2.3.4", "OptPlatform": "RESTAPI"}
    params[param] = "a\x00b"
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": "g-q", "Type": "Public", "EventTime": 1700000000000}
    resp = signed_client.post(f"/im/callback?{urlencode(params)}", data=json.dumps(body).encode(),
                              content_type="application/json")
    assert_envelope(resp)


def test_an_unexpected_error_still_answers_tencents_envelope(signed_client, db, monkeypatch):
    # IM reads only the envelope; a 5xx in /v1's shape (or HTML) is noise in its callback logs.
    import receiver.callbacks.endpoint as endpoint

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    from receiver.callbacks.spool import Spool

    monkeypatch.setattr(endpoint, "handle_body", boom)
    monkeypatch.setattr(endpoint, "quarantine", boom)  # even keeping it aside fails
    monkeypatch.setattr(Spool, "append", boom)  # and so does the spool, the last resort
    query = callback_query(TEST_SDKAPPID, token=TOKEN)
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": "g-boom", "Type": "Public", "EventTime": 1700000000000}
    resp = signed_client.post(f"/im/callback?{query}", json=body)
    assert resp.status_code == 500
    env = resp.get_json()
    assert set(env) == {"ActionStatus", "ErrorCode", "ErrorInfo"} and env["ActionStatus"] == "FAIL"
    assert env["ErrorCode"] != 0 and "simulated bug" not in env["ErrorInfo"]


def test_a_valid_callback_that_cannot_be_recorded_is_quarantined_not_lost(signed_client, db, monkeypatch):
    import receiver.callbacks.endpoint as endpoint

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug in recording")

    monkeypatch.setattr(endpoint, "handle_body", boom)
    query = callback_query(TEST_SDKAPPID, token=TOKEN)
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": "g-kept", "Type": "Public", "EventTime": 1700000000000}
    resp = signed_client.post(f"/im/callback?{query}", json=body)
    assert resp.status_code == 400
    assert "kept in quarantine" in resp.get_json()["ErrorInfo"]
    with db.session_scope() as s:
        row = s.scalars(select(Callback)).one()
    assert row.state == CallbackState.QUARANTINED and b'"g-kept"' in row.raw_body
