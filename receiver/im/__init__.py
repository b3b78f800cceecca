"""Tencent IM adapter: REST client, UserSig, rate limiting, typed errors and a fake."""

from receiver.im.client import GroupProbe, IMCall, IMRestClient, ProbeState
from receiver.im.errors import ErrorKind, IMError, classify
from receiver.im.fake import FakeIMClient
from receiver.im.ratelimit import build_limiter
from receiver.im.usersig import AdminSigner

__all__ = [
    "AdminSigner",
    "ErrorKind",
    "FakeIMClient",
    "GroupProbe",
    "IMCall",
    "IMError",
    "IMRestClient",
    "ProbeState",
    "build_limiter",
    "classify",
]
