"""UserSig (TLSSigAPIv2): generate, decode and verify, plus a caching admin signer."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from receiver.config import Secret

DEFAULT_EXPIRE_SECONDS = 180 * 86400
VERSION = "2.0"

# Tencent's own alphabet substitution, NOT RFC 4648 base64url.
_ENCODE = str.maketrans({"+": "*", "/": "-", "=": "_"})
_DECODE = str.maketrans({"*": "+", "-": "/", "_": "="})


class UserSigError(ValueError):
    """A UserSig was rejected; `im_code` is the error code Tencent IM answers for it."""

    im_code = 70003

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserSigInvalid(UserSigError):
    """The UserSig cannot be decoded (70003) or its HMAC does not match the key (70009)."""

    def __init__(self, message: str, *, bad_signature: bool = False) -> None:
        super().__init__(message)
        self.bad_signature = bad_signature
        self.im_code = 70009 if bad_signature else 70003


class UserSigExpired(UserSigError):
    """The UserSig is authentic but past `TLS.time + TLS.expire` (70001)."""

    im_code = 70001


class UserSigMismatch(UserSigError):
    """The UserSig was issued for another identifier (70013) or SDKAppID (70014)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
        self.im_code = 70013 if field == "identifier" else 70014


@dataclass(frozen=True)
class UserSigFields:
    """The decoded content of a UserSig."""

    identifier: str
    sdkappid: int
    time: int
    expire: int
    sig: str
    version: str = VERSION
    userbuf: str | None = None

    @property
    def expires_at(self) -> int:
        return self.time + self.expire


def _content(identifier: str, sdkappid: int, now: int, expire: int, userbuf: str | None) -> bytes:
    text = (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{now}\n"
        f"TLS.expire:{expire}\n"
    )
    if userbuf is not None:
        text += f"TLS.userbuf:{userbuf}\n"
    return text.encode("utf-8")


def compute_hmac(key: str, identifier: str, sdkappid: int, now: int, expire: int,
                 userbuf: str | None = None) -> str:
    """Return the base64 HMAC-SHA256 that goes into `TLS.sig`."""
    digest = hmac.new(key.encode("utf-8"), _content(identifier, sdkappid, now, expire, userbuf),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def generate(sdkappid: int, key: str, identifier: str, expire: int = DEFAULT_EXPIRE_SECONDS, *,
             now: int | None = None, userbuf: bytes | None = None) -> str:
    """Return a UserSig for `identifier`, valid `expire` seconds from `now` (Unix seconds)."""
    issued = int(time.time()) if now is None else int(now)
    buf = base64.b64encode(userbuf).decode("ascii") if userbuf is not None else None
    doc: dict[str, object] = {
        "TLS.ver": VERSION,
        "TLS.identifier": str(identifier),
        "TLS.sdkappid": int(sdkappid),
        "TLS.expire": int(expire),
        "TLS.time": issued,
    }
    if buf is not None:
        doc["TLS.userbuf"] = buf
    doc["TLS.sig"] = compute_hmac(key, str(identifier), int(sdkappid), issued, int(expire), buf)
    packed = zlib.compress(json.dumps(doc).encode("utf-8"))
    return base64.b64encode(packed).decode("ascii").translate(_ENCODE)


def decode(usersig: str) -> UserSigFields:
    """Decode a UserSig without checking it; raise UserSigInvalid if it is not one."""
    try:
        packed = base64.b64decode(usersig.translate(_DECODE).encode("ascii"), validate=True)
        doc = json.loads(zlib.decompress(packed).decode("utf-8"))
        return UserSigFields(
            identifier=str(doc["TLS.identifier"]),
            sdkappid=int(doc["TLS.sdkappid"]),
            time=int(doc["TLS.time"]),
            expire=int(doc["TLS.expire"]),
            sig=str(doc["TLS.sig"]),
            version=str(doc.get("TLS.ver", "")),
            userbuf=doc.get("TLS.userbuf"),
        )
    except (UnicodeError, binascii.Error, zlib.error, ValueError, KeyError, TypeError,
            AttributeError):
        raise UserSigInvalid("usersig is malformed") from None


def verify(usersig: str, *, sdkappid: int, key: str, identifier: str,
           now: float | None = None) -> UserSigFields:
    """Check a UserSig for this app and identifier; raise a UserSigError subclass if it fails.

    Order: decode, SDKAppID, identifier, HMAC, expiry. Unlike Tencent's Go reference the HMAC is
    checked before expiry, so a forged signature is reported as invalid, never as "expired".
    """
    fields = decode(usersig)
    if fields.sdkappid != int(sdkappid):
        raise UserSigMismatch("usersig was issued for another SDKAppID", field="sdkappid")
    if fields.identifier != identifier:
        raise UserSigMismatch("usersig was issued for another identifier", field="identifier")
    expected = compute_hmac(key, fields.identifier, fields.sdkappid, fields.time, fields.expire,
                            fields.userbuf)
    if not hmac.compare_digest(expected.encode("ascii"), fields.sig.encode("utf-8")):
        raise UserSigInvalid("usersig signature does not match the secret key", bad_signature=True)
    current = time.time() if now is None else now
    if current > fields.expires_at:
        raise UserSigExpired("usersig has expired")
    return fields


class AdminSigner:
    """Thread-safe cache of the admin UserSig, renewed once half its lifetime has passed."""

    def __init__(self, sdkappid: int, secret: Secret, identifier: str, *,
                 expire_seconds: int = 86400, renew_after_fraction: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("AdminSigner needs a secret key")
        if not 0 < renew_after_fraction < 1:
            raise ValueError("renew_after_fraction must be between 0 and 1")
        self.sdkappid = sdkappid
        self.identifier = identifier
        self.expire_seconds = expire_seconds
        self._secret = secret
        self._renew_after = expire_seconds * renew_after_fraction
        self._clock = clock
        self._lock = threading.Lock()
        self._sig: str | None = None
        self._issued_at = 0.0
        self.renewals = 0

    def current(self) -> str:
        """Return the cached admin UserSig, renewing it when due."""
        with self._lock:
            now = self._clock()
            if self._sig is None or now - self._issued_at >= self._renew_after or now < self._issued_at:
                self._renew(now)
            assert self._sig is not None
            return self._sig

    def force_renew(self) -> str:
        """Drop the cached UserSig and issue a new one (after 70001/70003)."""
        with self._lock:
            self._renew(self._clock())
            assert self._sig is not None
            return self._sig

    def _renew(self, now: float) -> None:
        self._sig = generate(self.sdkappid, self._secret.reveal(), self.identifier,
                             self.expire_seconds, now=int(now))
        self._issued_at = now
        self.renewals += 1

    def __repr__(self) -> str:
        return f"AdminSigner(sdkappid={self.sdkappid}, identifier={self.identifier!r})"
