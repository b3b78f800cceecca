"""Typed IM REST errors and the table that says which are retryable, re-sign, terminal or gone."""

from __future__ import annotations

import re
from enum import Enum

# Codes for failures that never reached an IM ErrorCode.
CODE_NETWORK = -1
CODE_HTTP_STATUS = -2
CODE_BAD_ANSWER = -3

# 60013 (answer JSON parse error) and 60014 (account check timeout): "yes / support" and "yes" in
# tencent-im.md's retry column.
RETRYABLE_CODES = frozenset({10002, 10006, 60007, 60008, 60011, 60013, 60014, 60018, 60019, 70169, 70500, 70050})
RESIGN_CODES = frozenset({70001, 70003})
GONE_CODES = {
    # 10015: "invalid group ID", in the newest table "does not exist or has already been
    # dismissed"; tencent-im.md §3.1 says to treat both as gone.
    "destroy_group": frozenset({10010, 10015}),
    # get_group_info: each group's own ErrorCode; both mean "no such group (any more)".
    "get_group_info": frozenset({10010, 10015}),
}
# 70050: "UserSig verification failed and rate limited; retry after 1 minute".
RETRY_AFTER_HINTS = {70050: 60.0}

_USERSIG_RE = re.compile(r"(usersig=)[^&\s'\"]*", re.IGNORECASE)


class ErrorKind(Enum):
    """What a caller should do about an IM error."""

    RETRYABLE = "retryable"
    RESIGN = "resign"
    TERMINAL = "terminal"
    GONE = "gone"


def classify(api: str, code: int, *, http_status: int | None = None) -> ErrorKind:
    """Classify an IM ErrorCode (or one of the CODE_* pseudo-codes) for `api`."""
    if code in (CODE_NETWORK, CODE_BAD_ANSWER):
        return ErrorKind.RETRYABLE
    if code == CODE_HTTP_STATUS:
        if http_status is None or http_status >= 500 or http_status == 429:
            return ErrorKind.RETRYABLE
        return ErrorKind.TERMINAL
    if code in GONE_CODES.get(api, ()):
        return ErrorKind.GONE
    if code in RESIGN_CODES:
        return ErrorKind.RESIGN
    if code in RETRYABLE_CODES:
        return ErrorKind.RETRYABLE
    # 10003/10004/10007, 6000x format/permission, 70009/70013/70014 and unknown codes.
    return ErrorKind.TERMINAL


def retry_after_hint(code: int) -> float | None:
    """Seconds to wait before retrying, when Tencent documents one."""
    return RETRY_AFTER_HINTS.get(code)


def redact(text: str) -> str:
    """Remove any `usersig=...` query value from a message."""
    return _USERSIG_RE.sub(r"\1***", text)


class IMError(Exception):
    """An IM REST call failed; `kind` says whether to retry, re-sign, give up or treat as gone."""

    def __init__(self, api: str, code: int, info: str, *, http_status: int | None = None,
                 duration: float = 0.0, kind: ErrorKind | None = None) -> None:
        self.api = api
        self.code = code
        self.info = redact(info)
        self.http_status = http_status
        self.duration = duration
        self.kind = kind if kind is not None else classify(api, code, http_status=http_status)
        self.retry_after = retry_after_hint(code)
        super().__init__(f"{api} failed: {code} {self.info}".rstrip())

    @property
    def retryable(self) -> bool:
        return self.kind is ErrorKind.RETRYABLE

    @property
    def gone(self) -> bool:
        return self.kind is ErrorKind.GONE

    def __repr__(self) -> str:
        return (f"IMError(api={self.api!r}, code={self.code}, info={self.info!r}, "
                f"kind={self.kind.value}, http_status={self.http_status})")

    def __reduce__(self):  # keep pickling (multiprocessing) working with keyword-only args
        return (_rebuild, (self.api, self.code, self.info, self.http_status, self.duration, self.kind))


def _rebuild(api: str, code: int, info: str, http_status: int | None, duration: float,
             kind: ErrorKind) -> IMError:
    return IMError(api, code, info, http_status=http_status, duration=duration, kind=kind)
