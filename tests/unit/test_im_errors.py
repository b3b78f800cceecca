"""IM error classification and IMError hygiene (no UserSig in messages)."""

from __future__ import annotations

import pickle

import pytest

from receiver.im.errors import (
    CODE_BAD_ANSWER,
    CODE_HTTP_STATUS,
    CODE_NETWORK,
    ErrorKind,
    IMError,
    classify,
    redact,
)

R, S, T, G = ErrorKind.RETRYABLE, ErrorKind.RESIGN, ErrorKind.TERMINAL, ErrorKind.GONE


@pytest.mark.parametrize("code", [10002, 10006, 60007, 60008, 60011, 60013, 60014, 60018, 60019, 70169, 70500, 70050,
                                  CODE_NETWORK, CODE_BAD_ANSWER])
@pytest.mark.parametrize("api", ["destroy_group", "get_group_info", "create_group"])
def test_retryable(api, code):
    assert classify(api, code) is R


@pytest.mark.parametrize("code", [70001, 70003])
def test_resign(code):
    assert classify("destroy_group", code) is S


@pytest.mark.parametrize("api, code, kind", [
    ("destroy_group", 10010, G),
    ("destroy_group", 10015, G),  # "does not exist or has already been dismissed" (tencent-im.md §3.1)
    ("get_group_info", 10010, G),
    ("get_group_info", 10015, G),
    ("create_group", 10010, T),
])
def test_gone_depends_on_the_api(api, code, kind):
    assert classify(api, code) is kind


@pytest.mark.parametrize("code", [10003, 10004, 10007, 60002, 60003, 60004, 60005, 60006, 60010, 60012,
                                  70009, 70013, 70014, 12345, 0x7FFFFFFF])
def test_terminal(code):
    assert classify("destroy_group", code) is T


@pytest.mark.parametrize("status, kind", [(500, R), (502, R), (503, R), (429, R), (404, T), (403, T), (None, R)])
def test_http_status(status, kind):
    assert classify("destroy_group", CODE_HTTP_STATUS, http_status=status) is kind


def test_70050_carries_a_60_second_hint():
    assert IMError("destroy_group", 70050, "rate limited").retry_after == 60.0
    assert IMError("destroy_group", 60007, "busy").retry_after is None


def test_error_fields_and_kind():
    err = IMError("destroy_group", 10010, "gone", http_status=200, duration=0.25)
    assert (err.api, err.code, err.info, err.http_status, err.duration) == ("destroy_group", 10010, "gone", 200, 0.25)
    assert err.kind is G and err.gone and not err.retryable


def test_usersig_never_appears_in_info_str_or_repr():
    sig = "eJyrVkrOz*SLsLSxMDG-sig_"
    msg = f"ConnectionError: Max retries exceeded with url: /v4/x?sdkappid=1&usersig={sig}&random=5"
    err = IMError("destroy_group", CODE_NETWORK, msg)
    for text in (err.info, str(err), repr(err)):
        assert sig not in text and "usersig=***" in text


def test_redact_handles_several_occurrences_and_case():
    assert redact("a?UserSig=abc&b=1 c?usersig=def") == "a?UserSig=***&b=1 c?usersig=***"


def test_error_survives_pickling():
    err = pickle.loads(pickle.dumps(IMError("get_group_info", 60007, "busy", http_status=200)))
    assert (err.code, err.kind, err.http_status) == (60007, R, 200)
