"""Origin checks of callback requests: Sign, RequestTime skew, SdkAppid, source address."""

import ipaddress

import pytest

from receiver.callbacks import verify
from receiver.config import Secret

DOC_TOKEN = "xxxxyyyy"
DOC_TIME = "1669872112"
DOC_SIGN = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"


def test_compute_sign_matches_the_documented_example():
    assert verify.compute_sign(DOC_TOKEN, DOC_TIME) == DOC_SIGN


def test_documented_example_passes_within_skew():
    verify.check_sign(DOC_SIGN, DOC_TIME, (Secret(DOC_TOKEN),), now=int(DOC_TIME) + 30, max_skew_seconds=60)


def test_upper_case_hex_is_accepted():
    verify.check_sign(DOC_SIGN.upper(), DOC_TIME, (Secret(DOC_TOKEN),), now=int(DOC_TIME), max_skew_seconds=60)


@pytest.mark.parametrize("offset", [61, -61, 3600])
def test_request_time_outside_skew_is_refused(offset):
    with pytest.raises(verify.CallbackRejected) as exc:
        verify.check_sign(DOC_SIGN, DOC_TIME, (Secret(DOC_TOKEN),), now=int(DOC_TIME) + offset, max_skew_seconds=60)
    assert exc.value.http_status == 401 and exc.value.reason == "request_time_skew"


@pytest.mark.parametrize("sign,rt,reason", [
    (None, DOC_TIME, "sign_missing"),
    (DOC_SIGN, None, "sign_missing"),
    ("", DOC_TIME, "sign_missing"),
    (DOC_SIGN[:-1] + "0", DOC_TIME, "sign_invalid"),
    ("not-hex-ü", DOC_TIME, "sign_invalid"),
    (DOC_SIGN, "16698721xx", "request_time_invalid"),
    (DOC_SIGN, "²", "request_time_invalid"),  # a digit to str.isdigit, not to int()
    (DOC_SIGN, "١٦٦٩٨٧٢١١٢", "request_time_invalid"),  # DOC_TIME in Arabic-Indic digits
    (DOC_SIGN, "+1669872112", "request_time_invalid"),
])
def test_bad_sign_is_refused_with_a_reason(sign, rt, reason):
    with pytest.raises(verify.CallbackRejected) as exc:
        verify.check_sign(sign, rt, (Secret(DOC_TOKEN),), now=int(DOC_TIME), max_skew_seconds=60)
    assert exc.value.http_status == 401
    assert exc.value.reason == reason
    assert DOC_TOKEN not in exc.value.info


def test_any_token_of_a_rotation_window_is_accepted():
    tokens = (Secret("old-token"), Secret(DOC_TOKEN))
    verify.check_sign(DOC_SIGN, DOC_TIME, tokens, now=int(DOC_TIME), max_skew_seconds=60)
    with pytest.raises(verify.CallbackRejected):
        verify.check_sign(DOC_SIGN, DOC_TIME, (Secret("old-token"),), now=int(DOC_TIME), max_skew_seconds=60)


def test_each_tokens_sign_is_computed_once_per_request_time(monkeypatch):
    computed = []
    real = verify.compute_sign
    monkeypatch.setattr(verify, "compute_sign", lambda token, rt: computed.append(rt) or real(token, rt))
    tokens = (Secret("rotated-out"), Secret(DOC_TOKEN))
    request_time = str(int(DOC_TIME) + 1)
    sign = real(DOC_TOKEN, request_time)
    for _ in range(3):
        verify.check_sign(sign, request_time, tokens, now=int(DOC_TIME), max_skew_seconds=60)
    assert computed == [request_time, request_time]  # one per token, on the first callback only
    with pytest.raises(verify.CallbackRejected):  # another configuration is not answered from the cache
        verify.check_sign(sign, request_time, (Secret("rotated-out"),), now=int(DOC_TIME), max_skew_seconds=60)
    with pytest.raises(verify.CallbackRejected):  # nor another RequestTime
        verify.check_sign(sign, DOC_TIME, tokens, now=int(DOC_TIME), max_skew_seconds=60)


def test_the_sign_cache_stays_small():
    for n in range(3 * verify._SIGNS_KEPT):
        request_time = str(int(DOC_TIME) + n)
        verify.check_sign(verify.compute_sign(DOC_TOKEN, request_time), request_time, (Secret(DOC_TOKEN),),
                          now=int(DOC_TIME) + n, max_skew_seconds=60)
        assert len(verify._signs) <= verify._SIGNS_KEPT


def test_no_token_configured_means_no_sign_check():
    verify.check_sign(None, None, (), now=0, max_skew_seconds=60)


@pytest.mark.parametrize("value", [None, "", "1400000002", "abc", " 14000000001",
                                   # int() reads these as ours; the stored record could not: refused
                                   "+1400000001", "1_400_000_001", "١٤٠٠٠٠٠٠٠١", "²"])
def test_foreign_sdkappid_is_forbidden(value):
    with pytest.raises(verify.CallbackRejected) as exc:
        verify.check_sdkappid(value, 1400000001)
    assert exc.value.http_status == 403


def test_our_sdkappid_passes_with_whitespace():
    verify.check_sdkappid(" 1400000001 ", 1400000001)


@pytest.mark.parametrize("value, number", [("1400000001", 1400000001), (" 0042 ", 42), (None, None), ("", None),
                                           ("+1", None), ("1_0", None), ("²", None), ("١٤", None), ("9" * 19, None)])
def test_query_numbers_are_plain_ascii_digits(value, number):
    assert verify.query_number(value) == number


def test_address_allow_list():
    nets = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    verify.check_address("10.1.2.3", nets)
    verify.check_address("::1", nets)
    verify.check_address("::ffff:10.0.0.5", nets)  # IPv4 as a server listening on [::] sees it
    with pytest.raises(verify.CallbackRejected):
        verify.check_address("::ffff:11.0.0.5", nets)
    for bad in ("11.0.0.1", "", None, "garbage"):
        with pytest.raises(verify.CallbackRejected) as exc:
            verify.check_address(bad, nets)
        assert exc.value.http_status == 403
    verify.check_address("203.0.113.9", ())  # no list: everyone
