"""Pure checks of a callback request's origin: SdkAppid, Sign/RequestTime, source address."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

from receiver.config import Secret
from receiver.textsafety import is_decimal


@dataclass
class CallbackRejected(Exception):
    """The request is refused before its body is considered; nothing is stored as an event."""

    http_status: int
    error_code: int
    reason: str  # short label for metrics
    info: str  # the ErrorInfo sent back; never contains a secret

    def __str__(self) -> str:
        return self.info


# ErrorCode values we answer with; IM ignores them for after-event callbacks, operators read them.
ERR_FORBIDDEN_SDKAPPID = 4031
ERR_FORBIDDEN_ADDRESS = 4032
ERR_SIGN_MISSING = 4011
ERR_SIGN_INVALID = 4012
ERR_REQUEST_TIME = 4013


def compute_sign(token: str, request_time: str) -> str:
    """Tencent's callback signature: lower-case hex SHA-256 of token followed by RequestTime."""
    return hashlib.sha256((token + request_time).encode("utf-8")).hexdigest()


def query_number(value: str | None) -> int | None:
    """A query parameter's number (SdkAppid, RequestTime): ASCII digits, fewer than 19, blanks around; else None."""
    if value is None:
        return None
    value = value.strip()
    if is_decimal(value) and len(value) < 19:
        return int(value)
    return None


def check_sdkappid(value: str | None, expected: int) -> None:
    if value is None or value.strip() == "":
        raise CallbackRejected(403, ERR_FORBIDDEN_SDKAPPID, "sdkappid_missing", "SdkAppid query parameter is missing")
    # Read as the stored record reads it (`query_number`): "+1400000000" or "1_400_000_000", which
    # int() would take, are refused here with the reason instead of failing to be recorded later.
    if query_number(value) != expected:
        raise CallbackRejected(403, ERR_FORBIDDEN_SDKAPPID, "sdkappid_mismatch", "SdkAppid does not match this service's SDKAppID")


def check_sign(
    sign: str | None,
    request_time: str | None,
    tokens: Sequence[Secret],
    *,
    now: float,
    max_skew_seconds: int,
) -> None:
    """Require a valid `Sign` for a fresh `RequestTime` when any callback token is configured."""
    if not tokens:
        return
    if not sign or not request_time:
        raise CallbackRejected(401, ERR_SIGN_MISSING, "sign_missing", "Sign and RequestTime are required (callback authentication is on)")
    request_time = request_time.strip()
    if not is_decimal(request_time) or len(request_time) > 12:  # int() of thousands of digits raises
        raise CallbackRejected(401, ERR_REQUEST_TIME, "request_time_invalid", "RequestTime must be Unix seconds")
    if abs(now - int(request_time)) > max_skew_seconds:
        raise CallbackRejected(
            401, ERR_REQUEST_TIME, "request_time_skew",
            f"RequestTime is more than {max_skew_seconds} s away from the server's clock",
        )
    given = sign.strip().lower().encode("ascii", "replace")
    # Compare against every configured token (rotation window) without short-circuiting.
    matched = False
    for expected in _expected_signs(tokens, request_time):
        matched |= hmac.compare_digest(given, expected)
    if not matched:
        raise CallbackRejected(401, ERR_SIGN_INVALID, "sign_invalid", "Sign does not match")


# Each token's Sign for a RequestTime, for the last few RequestTimes seen. IM stamps every
# callback with the second it sends it, so under load nearly every callback's Sign was already
# computed for its neighbours: one SHA-256 per token a second, instead of one per callback
# (whose OpenSSL call was ≈ 2 % of the endpoint's interpreter time under load). Keyed by the
# tokens themselves (`Secret`s: they never show their value), so a change of configuration
# never reuses another token's Sign. Plain dict operations, atomic under the interpreter lock.
_SIGNS_KEPT = 64
_signs: dict[tuple[tuple[Secret, ...], str], tuple[bytes, ...]] = {}


def _expected_signs(tokens: Sequence[Secret], request_time: str) -> tuple[bytes, ...]:
    key = (tuple(tokens), request_time)
    expected = _signs.get(key)
    if expected is None:
        if len(_signs) >= _SIGNS_KEPT:
            _signs.clear()
        expected = _signs[key] = tuple(compute_sign(token.reveal(), request_time).encode("ascii")
                                       for token in tokens)
    return expected


def check_address(remote_addr: str | None, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    allowed = tuple(allowed)
    if not allowed:
        return
    try:
        address = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.5 from a server listening on [::] is 10.0.0.5
    if address is None or not any(address in net for net in allowed if net.version == address.version):
        raise CallbackRejected(403, ERR_FORBIDDEN_ADDRESS, "address_not_allowed", "source address is not in IM_CALLBACK_ALLOWED_IPS")
