"""Bearer-token checks for /v1 (reusable by the dashboard): constant-time, against every API token."""

from __future__ import annotations

import hmac
from typing import Sequence

from receiver.config import Secret


class AuthError(Exception):
    """The request carries no acceptable token; the message is safe to show (it never holds one)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_is_valid(presented: str | None, tokens: Sequence[Secret]) -> bool:
    """Whether `presented` equals one of `tokens`; compares with every token in constant time."""
    if not presented:
        return False
    given = presented.encode("utf-8", "surrogatepass")
    matched = False
    for token in tokens:
        # No early exit: the time taken does not tell which token (or how much of it) matched.
        matched |= hmac.compare_digest(given, token.reveal().encode("utf-8"))
    return matched


def check_token(presented: str | None, tokens: Sequence[Secret]) -> None:
    """Raise AuthError unless `presented` is one of the configured API tokens."""
    if not tokens:
        raise AuthError("API_TOKENS is not set: the API refuses every request until a token is configured")
    if presented is None:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    if not token_is_valid(presented, tokens):
        raise AuthError("the bearer token is not valid")
