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
