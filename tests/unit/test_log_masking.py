"""mask_secrets: the quick check that skips most lines never skips one that needs masking."""

from __future__ import annotations

import pytest

from receiver.logs import mask_secrets


@pytest.mark.parametrize("line, secret", [
    ("POST /v4/x?sdkappid=1&usersig=eJyrVkosKMhJTVGyUkpKzFGqBQA&random=2", "eJyrVkosKMhJTVGyUkpKzFGqBQA"),
    ("callback ?Sign=" + "ab12" * 16 + "&RequestTime=1", "ab12" * 16),
    ("Authorization: bEaReR tok-123", "tok-123"),
    ("GET /?TOKEN=dash-secret", "dash-secret"),
    ("uſersig=long-s-secret", "long-s-secret"),  # re.I folds ſ to s; the quick check must too
])
def test_secrets_are_masked(line, secret):
    assert secret not in mask_secrets(line)


def test_a_line_without_secrets_is_returned_unchanged():
    line = "POST /im/callback 200 stored  callback_id=01ABC duration_ms=3.2"
    assert mask_secrets(line) is line


@pytest.mark.parametrize("formatter", ["text", "json"])
def test_a_record_is_one_line_whatever_a_request_put_in_it(formatter):
    # A path or query parameter from a caller must not forge a line of its own (CONTRACT §5).
    import json
    import logging
    import sys

    from receiver.logs import JSONFormatter, TextFormatter

    fmt = TextFormatter() if formatter == "text" else JSONFormatter()
    forged = "x\n05:25:00.000 INFO    receiver.http: FORGED\r\x85\u2028\u2029"
    record = logging.LogRecord("receiver.http", logging.INFO, __file__, 1, "GET %s 404", (forged,), None)
    record.path = forged
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failed = logging.LogRecord("receiver", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    for line in (fmt.format(record), fmt.format(failed)):
        assert len(line.splitlines()) == 1, line
    if formatter == "json":
        assert json.loads(fmt.format(record))["path"] == forged  # escaped, not lost
        assert "Traceback" in json.loads(fmt.format(failed))["exc"]
    else:
        assert "FORGED" in fmt.format(record) and "\\n05:25:00.000" in fmt.format(record)
        assert "exc=Traceback" in fmt.format(failed) and "boom\\nsecond line" in fmt.format(failed)
