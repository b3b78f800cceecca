"""UserSig: interop with Tencent's official TLSSigAPIv2 package, verification errors, AdminSigner."""

from __future__ import annotations

import base64
import json
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import TLSSigAPIv2 as official_module
from TLSSigAPIv2 import TLSSigAPIv2
from receiver.config import Secret
from receiver.im import usersig
from receiver.im.usersig import (
    AdminSigner,
    UserSigExpired,
    UserSigInvalid,
    UserSigMismatch,
    decode,
    generate,
    verify,
)

APPID = 1400000000
KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
T0 = 1_700_000_000


def official_sig(monkeypatch: pytest.MonkeyPatch, identifier: str, expire: int, now: int,
                 key: str = KEY) -> str:
    monkeypatch.setattr(official_module.time, "time", lambda: now)
    return TLSSigAPIv2(APPID, key).gen_sig(identifier, expire)


def raw_doc(sig: str) -> dict:
    std = sig.replace("*", "+").replace("-", "/").replace("_", "=")
    return json.loads(zlib.decompress(base64.b64decode(std)))


def test_official_signature_verifies_with_ours(monkeypatch):
    sig = official_sig(monkeypatch, "administrator", 86400, T0)
    fields = verify(sig, sdkappid=APPID, key=KEY, identifier="administrator", now=T0 + 10)
    assert (fields.identifier, fields.sdkappid, fields.time, fields.expire) == ("administrator", APPID, T0, 86400)


def test_ours_decodes_to_the_same_document_as_the_official_one(monkeypatch):
    theirs = raw_doc(official_sig(monkeypatch, "admin_1", 3600, T0))
    ours = raw_doc(generate(APPID, KEY, "admin_1", 3600, now=T0))
    assert ours == theirs
    assert ours["TLS.sig"] == usersig.compute_hmac(KEY, "admin_1", APPID, T0, 3600)


def test_official_signature_with_userbuf_verifies(monkeypatch):
    monkeypatch.setattr(official_module.time, "time", lambda: T0)
    sig = TLSSigAPIv2(APPID, KEY).gen_sig_with_userbuf("bob", 600, b"room-7")
    assert verify(sig, sdkappid=APPID, key=KEY, identifier="bob", now=T0).userbuf == "cm9vbS03"


def test_uses_tencent_alphabet_not_base64url():
    for ident in ("a", "bb", "administrator", "x" * 31):
        sig = generate(APPID, KEY, ident, now=T0)
        assert not set(sig) & set("+/=")
        assert set(sig) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-_")


@settings(max_examples=60, deadline=None)
@given(identifier=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32),
       expire=st.integers(min_value=1, max_value=10**8),
       now=st.integers(min_value=0, max_value=2**32))
def test_round_trip(identifier, expire, now):
    sig = generate(APPID, KEY, identifier, expire, now=now)
    assert verify(sig, sdkappid=APPID, key=KEY, identifier=identifier, now=now + expire).expires_at == now + expire


def test_expired_is_reported_as_expired():
    sig = generate(APPID, KEY, "administrator", 60, now=T0)
    verify(sig, sdkappid=APPID, key=KEY, identifier="administrator", now=T0 + 60)
    with pytest.raises(UserSigExpired) as err:
        verify(sig, sdkappid=APPID, key=KEY, identifier="administrator", now=T0 + 61)
    assert err.value.im_code == 70001


def test_wrong_key_is_invalid_signature_even_when_expired():
    sig = generate(APPID, "other-key", "administrator", 60, now=T0)
    with pytest.raises(UserSigInvalid) as err:
        verify(sig, sdkappid=APPID, key=KEY, identifier="administrator", now=T0 + 3600)
    assert err.value.bad_signature and err.value.im_code == 70009


@pytest.mark.parametrize("kwargs, field, code", [
    ({"identifier": "someone"}, "identifier", 70013),
    ({"sdkappid": APPID + 1}, "sdkappid", 70014),
])
def test_mismatch_names_the_field(kwargs, field, code):
    sig = generate(APPID, KEY, "administrator", now=T0)
    args = {"sdkappid": APPID, "key": KEY, "identifier": "administrator", "now": T0} | kwargs
    with pytest.raises(UserSigMismatch) as err:
        verify(sig, **args)
    assert (err.value.field, err.value.im_code) == (field, code)


@pytest.mark.parametrize("garbage", ["", "not a sig", "eJw*", base64.b64encode(b"plain").decode(),
                                     generate(APPID, KEY, "a", now=T0)[:-6], "é"])
def test_garbage_is_malformed(garbage):
    with pytest.raises(UserSigInvalid) as err:
        decode(garbage)
    assert err.value.im_code == 70003 and not err.value.bad_signature


def test_tampered_field_fails_hmac():
    doc = raw_doc(generate(APPID, KEY, "administrator", 60, now=T0))
    doc["TLS.expire"] = 10**9
    forged = base64.b64encode(zlib.compress(json.dumps(doc).encode())).decode()
    forged = forged.replace("+", "*").replace("/", "-").replace("=", "_")
    with pytest.raises(UserSigInvalid):
        verify(forged, sdkappid=APPID, key=KEY, identifier="administrator", now=T0)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_admin_signer_caches_then_renews_at_half_life():
    clock = FakeClock(T0)
    signer = AdminSigner(APPID, Secret(KEY), "administrator", expire_seconds=1000, clock=clock)
    first = signer.current()
    clock.now = T0 + 499
    assert signer.current() == first and signer.renewals == 1
    clock.now = T0 + 500
    renewed = signer.current()
    assert renewed != first and decode(renewed).time == T0 + 500 and signer.renewals == 2


def test_admin_signer_force_renew_issues_a_new_sig():
    clock = FakeClock(T0)
    signer = AdminSigner(APPID, Secret(KEY), "administrator", clock=clock)
    first = signer.current()
    clock.now = T0 + 1
    assert signer.force_renew() != first
    assert decode(signer.current()).time == T0 + 1


def test_admin_signer_is_thread_safe_and_signs_once():
    signer = AdminSigner(APPID, Secret(KEY), "administrator", clock=FakeClock(T0))
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def grab() -> None:
        barrier.wait()
        seen.append(signer.current())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and signer.renewals == 1


def test_admin_signer_repr_hides_secret_and_sig():
    signer = AdminSigner(APPID, Secret(KEY), "administrator", clock=FakeClock(T0))
    sig = signer.current()
    assert KEY not in repr(signer) and sig not in repr(signer)
