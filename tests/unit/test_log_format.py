"""Both formatters spell a record's time and its extra fields as the logging module would."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from receiver.logs import JSONFormatter, TextFormatter


def record_at(created: float, **extra) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "receiver.t", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "POST %s %s", "args": ("/im/callback", 200)})
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord.__init__ sets it
    for key, value in extra.items():
        setattr(record, key, value)
    return record


# Within one second, across seconds, minutes, a day and a year.
TIMES = [1764583501.0, 1764583501.123, 1764583501.999, 1764583502.5, 1764583559.999, 1764583560.001,
         1764633599.75, 1767225599.999, 1767225600.004, 1764583501.456]


def test_text_lines_carry_the_records_utc_time_to_the_millisecond():
    formatter = TextFormatter()
    for created in TIMES:
        moment = datetime.fromtimestamp(int(created), tz=timezone.utc)
        expected = moment.strftime("%H:%M:%S") + f".{int((created - int(created)) * 1000):03d}"
        assert formatter.format(record_at(created)).startswith(expected + " INFO    receiver.t: POST /im/callback 200")


def test_json_lines_carry_the_records_utc_time_as_iso_8601_with_z():
    formatter = JSONFormatter()
    for created in TIMES:
        ts = json.loads(formatter.format(record_at(created)))["ts"]
        assert ts.endswith("Z")
        parsed = datetime.fromisoformat(ts[:-1] + "+00:00")
        assert parsed == datetime.fromtimestamp(int(created), tz=timezone.utc).replace(
            microsecond=1000 * int((created - int(created)) * 1000))


def test_extra_fields_follow_the_message_in_the_order_they_were_given_and_standard_ones_do_not():
    record = record_at(1764583501.25, outcome="stored", callback_id="01A", status=200, request_id="r1")
    record.message = "set by another formatter"  # standard: never an extra field
    text = TextFormatter().format(record)
    assert text.endswith("  outcome=stored callback_id=01A status=200 request_id=r1")
    fields = json.loads(JSONFormatter().format(record))
    assert list(fields) == ["ts", "level", "logger", "event", "outcome", "callback_id", "status", "request_id"]
