"""Units of the operator tools: durations, the latency histogram layout, body re-validation."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, strategies as st

from receiver.ops.durations import parse_duration
from receiver.ops.overview import LATENCY_BUCKETS, latency_chart
from receiver.callbacks.parsing import Parsed, Refused, validate_body
from tests.helpers import GROUP_DESTROYED, destroyed_body


@pytest.mark.parametrize("text, expected", [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)),
                                            ("30m", timedelta(minutes=30)), (" 45S ", timedelta(seconds=45))])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "90", "1.5d", "90 days", "-1d", "0h", "1d2h", "٩٠d"])
def test_bad_durations_say_why(text):
    with pytest.raises(ValueError) as err:
        parse_duration(text)
    assert "duration" in str(err.value)


def test_durations_stop_at_a_hundred_years():
    # 999999d before now is before year 1: an OverflowError traceback in purge and replay.
    assert parse_duration("36500d") == timedelta(days=36500)
    with pytest.raises(ValueError, match="too long: at most 36500d"):
        parse_duration("999999d")


@given(st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), max_size=200))
def test_latency_chart_counts_every_value_once_and_stays_in_the_box(values):
    chart = latency_chart(values)
    assert len(chart.bars) == len(LATENCY_BUCKETS) + 1
    assert sum(bar.count for bar in chart.bars) == len(values) == chart.sample
    for bar in chart.bars:
        assert 0 <= bar.x and bar.x + bar.width <= chart.width
        assert 0 <= bar.y <= chart.baseline and abs(bar.y + bar.height - chart.baseline) < 0.2
    if values:
        assert min(values) <= chart.p50 <= chart.p95 <= max(values)
        assert max(bar.height for bar in chart.bars) > 0


def test_latency_chart_buckets():
    chart = latency_chart([0.1, 0.4, 0.9, 3, 3, 1000])
    counts = {bar.label: bar.count for bar in chart.bars}
    assert counts["≤0.5s"] == 2 and counts["≤1s"] == 1 and counts["≤5s"] == 2 and counts[">5m"] == 1


def test_validate_body_matches_the_endpoint_rules():
    good = json.dumps(destroyed_body("g")).encode()
    assert isinstance(validate_body(good, GROUP_DESTROYED), Parsed)
    assert isinstance(validate_body(good, None), Parsed)
    assert validate_body(b"\xff", GROUP_DESTROYED).reason == "body is not valid UTF-8"
    assert validate_body(b"[1]", GROUP_DESTROYED).reason == "JSON body must be an object"
    assert "duplicate key" in validate_body(b'{"a": 1, "a": 2}', GROUP_DESTROYED).reason
    assert "nested too deeply" in validate_body(b"[" * 100_000, GROUP_DESTROYED).reason
    mismatch = validate_body(json.dumps({"CallbackCommand": "Group.Other"}).encode(), GROUP_DESTROYED)
    assert isinstance(mismatch, Refused) and "does not match" in mismatch.reason and not mismatch.ignored
    assert validate_body(json.dumps({"CallbackCommand": "Group.Other"}).encode(), None).ignored
    missing = validate_body(json.dumps({"GroupId": "g"}).encode(), None)
    assert missing.reason == "CallbackCommand is missing from the query string and the body"
    no_type = validate_body(json.dumps({"CallbackCommand": GROUP_DESTROYED, "GroupId": "g"}).encode(), None)
    assert no_type.reason.startswith(f"invalid {GROUP_DESTROYED} body: Type")
