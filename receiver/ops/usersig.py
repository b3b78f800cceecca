"""Issue an admin UserSig for manual REST calls to IM."""

from __future__ import annotations

from receiver.config import Config
from receiver.im.usersig import generate

MAX_EXPIRE_SECONDS = 180 * 86400


class UserSigRefused(ValueError):
    """No UserSig can be issued (no secret key, or a bad argument); the message says why."""


def issue_usersig(config: Config, *, identifier: str | None = None, expire_seconds: int = 3600,
                  now: int | None = None) -> str:
    """A UserSig for `identifier` (default: the admin account) valid for `expire_seconds`."""
    if not config.im_secret_key:
        raise UserSigRefused("IM_SECRET_KEY is not set: there is no key to sign a UserSig with")
    identifier = (identifier if identifier is not None else config.im_admin_identifier).strip()
    if not identifier:
        raise UserSigRefused("the identifier must not be empty")
    if not 0 < expire_seconds <= MAX_EXPIRE_SECONDS:
        raise UserSigRefused(f"expire must be between 1 and {MAX_EXPIRE_SECONDS} seconds")
    return generate(config.im_sdkappid, config.im_secret_key.reveal(), identifier, expire_seconds, now=now)
