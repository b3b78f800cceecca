"""Pure pieces of the /v1 API: token checks, cursors, RFC 3339 times, ULID time bounds, the waiter hub."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.api.auth import AuthError, bearer_token, check_token, token_is_valid
from receiver.api.waiter import WaiterHub
from receiver.config import Secret
from receiver.models import new_id
from receiver.queries import id_floor
from receiver.schemas.api import decode_cursor, encode_cursor, format_time, parse_time

TOKENS = (Secret("alpha-token"), Secret("beta-token"))


@pytest.mark.parametrize("header,token", [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"),
    (None, None), ("", None), ("Bearer", None), ("Bearer   ", None), ("Basic abc", None), ("abc", None),
])
def test_bearer_token_parsing(header, token):
    assert bearer_token(header) == token


def test_token_check_accepts_any_configured_token_only():
    assert token_is_valid("alpha-token", TOKENS) and token_is_valid("beta-token", TOKENS)
    for wrong in ("alpha", "alpha-token ", "", None, "caf\u00e9", "\udcff"):
        assert not token_is_valid(wrong, TOKENS)


def test_check_token_messages_never_include_a_token():
    with pytest.raises(AuthError, match="API_TOKENS is not set"):
        check_token("alpha-token", ())
    with pytest.raises(AuthError, match="missing"):
        check_token(None, TOKENS)
    with pytest.raises(AuthError) as err:
        check_token("alpha-tokeX", TOKENS)
    assert "alpha" not in str(err.value)
    check_token("beta-token", TOKENS)


def test_cursor_round_trip_and_rejection():
    some_id = new_id()
    assert decode_cursor(encode_cursor(some_id)) == some_id
    for bad in ("", "!!", encode_cursor("short"), encode_cursor(some_id) + "A", encode_cursor(some_id.lower())):
        with pytest.raises(ValueError):
            decode_cursor(bad)


@given(st.text(max_size=60))
def test_decode_cursor_raises_only_value_error(text):
    try:
        decode_cursor(text)
    except ValueError:
        pass


@pytest.mark.parametrize("text,expected", [
    ("2026-11-29T20:41:08.123Z", datetime(2026, 11, 29, 20, 41, 8, 123000, tzinfo=timezone.utc)),
    ("2026-11-29T20:41:08Z", datetime(2026, 11, 29, 20, 41, 8, tzinfo=timezone.utc)),
    ("2026-11-30t04:41:08.1234567+08:00", datetime(2026, 11, 29, 20, 41, 8, 123456, tzinfo=timezone.utc)),
    ("2026-11-29 20:41:08-01:30", datetime(2026, 11, 29, 22, 11, 8, tzinfo=timezone.utc)),
])
def test_parse_time_accepts_rfc3339_with_any_offset(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["2026-11-29", "2026-11-29T20:41:08", "2026-02-30T00:00:00Z", "2026-11-29T24:00:00Z",
                                  "0001-01-01T00:00:00+01:00", "2026-11-29T20:41:08+25:00", "yesterday", "1700000000",
                                  "١١١١-01-01T00:00:00Z"])  # digits of another script
def test_parse_time_refuses_anything_else(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_format_time_is_utc_with_milliseconds_and_z():
    moment = datetime(2026, 11, 30, 4, 41, 8, 123999, tzinfo=timezone(timedelta(hours=8)))
    assert format_time(moment) == "2026-11-29T20:41:08.123Z"
    assert format_time(moment.astimezone(timezone.utc)) == "2026-11-29T20:41:08.123Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000Z"
    # Truncated, not rounded, and the first and last years a datetime holds.
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 1999, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.001Z"
    assert format_time(datetime(1, 1, 1, tzinfo=timezone.utc)) == "0001-01-01T00:00:00.000Z"
    assert format_time(datetime.max.replace(tzinfo=timezone.utc)) == "9999-12-31T23:59:59.999Z"
    assert format_time(datetime(999, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)) == "0999-01-02T03:04:05.006Z"


@pytest.mark.parametrize("offset_minutes", [-720, -90, 0, 345, 840])
def test_format_time_reads_back_as_the_same_millisecond(offset_minutes):
    zone = timezone(timedelta(minutes=offset_minutes))
    for micros in (0, 999, 1000, 123456, 999999):
        moment = datetime(2026, 12, 31, 23, 59, 59, micros, tzinfo=zone)
        assert parse_time(format_time(moment)) == moment.replace(microsecond=micros // 1000 * 1000)


def test_id_floor_brackets_ids_minted_at_a_time():
    before = datetime.now(timezone.utc) - timedelta(milliseconds=2)
    minted = new_id()
    after = datetime.now(timezone.utc) + timedelta(milliseconds=2)
    assert id_floor(before) <= minted < id_floor(after)
    assert id_floor(datetime(1900, 1, 1, tzinfo=timezone.utc)) == "0" * 26
    assert len(id_floor(datetime(9999, 12, 31, tzinfo=timezone.utc))) == 26


class FakeSession:
    """Answers the hub's one query from a set the test controls."""

    def __init__(self, final: set[str], calls: list) -> None:
        self.final, self.calls = final, calls

    def scalars(self, query):
        self.calls.append(query)
        ids = query.whereclause.clauses[0].right.value
        return [i for i in ids if i in self.final]

    def close(self):
        pass


def test_waiter_hub_wakes_waiters_with_one_query_per_poll_and_idles_without_them():
    final: set[str] = set()
    calls: list = []
    hub = WaiterHub(lambda: FakeSession(final, calls), interval=0.02)
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, hub.wait(f"d{i}", 5))) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert hub.waiting == 20
    final.update(f"d{i}" for i in range(10))
    for t in threads[:10]:
        t.join(2)
    assert all(results[i] for i in range(10)) and hub.waiting == 10
    final.update(f"d{i}" for i in range(10, 20))
    for t in threads:
        t.join(2)
    assert all(results.values()) and len(results) == 20
    polls = len(calls)
    time.sleep(0.1)
    assert len(calls) == polls  # idle: nobody waits, nothing is polled
    assert hub.wait("never", 0.05) is False
    hub.stop()
