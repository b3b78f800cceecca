"""Tencent IM REST client for the group APIs: signs, rate-limits, times and translates errors."""

from __future__ import annotations

import enum
import json
import os
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import urllib3

from receiver.im.errors import (
    CODE_BAD_ANSWER,
    CODE_HTTP_STATUS,
    CODE_NETWORK,
    ErrorKind,
    IMError,
    RESIGN_CODES,
    classify,
    redact,
)
from receiver.im.ratelimit import Limiter
from receiver.im.usersig import AdminSigner

SERVICE = "group_open_http_svc"
MAX_GROUPS_PER_INFO_CALL = 50
POOL_SIZE = 32
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class IMCall:
    """One answered IM REST call (the last attempt, after any re-sign)."""

    api: str
    http_status: int | None
    error_code: int
    error_info: str
    duration: float
    body: dict[str, Any] = field(default_factory=dict, repr=False)


class ProbeState(enum.Enum):
    EXISTS = "exists"
    GONE = "gone"
    ERROR = "error"


@dataclass(frozen=True)
class GroupProbe:
    """What get_group_info said about one group."""

    group_id: str
    state: ProbeState
    error_code: int = 0
    error_info: str = ""
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def exists(self) -> bool:
        return self.state is ProbeState.EXISTS

    @property
    def gone(self) -> bool:
        return self.state is ProbeState.GONE


def new_pool(pool_size: int = POOL_SIZE, *, proxy_url: str | None = None,
             ca_bundle: str | None = None) -> urllib3.PoolManager:
    """A keep-alive pool of `pool_size` connections per host; no hidden retries.

    `proxy_url` and `ca_bundle` (a file or a directory) come from the config, resolved once for
    IM's host; credentials in the proxy URL go as Proxy-Authorization. Plain urllib3 rather than
    requests: at 200 calls a second, requests' per-call work was a fifth of a dispatcher's CPU.
    """
    options: dict[str, Any] = {"maxsize": pool_size, "retries": False}
    if ca_bundle and os.path.isdir(ca_bundle):
        options["ca_cert_dir"] = ca_bundle
    else:
        options["ca_certs"] = ca_bundle
    if proxy_url is None:
        return urllib3.PoolManager(**options)
    proxy = urllib.parse.urlsplit(proxy_url)
    if proxy.username is not None:
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        options["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=credentials)
        proxy_url = proxy._replace(netloc=proxy.netloc.rpartition("@")[2]).geturl()
    return urllib3.ProxyManager(proxy_url, **options)


class IMRestClient:
    """Client for `v4/group_open_http_svc/*`; every failure becomes an `IMError`."""

    def __init__(self, config, *, limiter: Limiter, signer: AdminSigner | None = None,  # noqa: ANN001
                 http: urllib3.PoolManager | None = None, pool_size: int = POOL_SIZE,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 on_call: Callable[[IMCall], None] | None = None) -> None:
        if signer is None:
            if not config.im_secret_key:
                raise ValueError("IM_SECRET_KEY is not set: cannot sign IM REST calls")
            signer = AdminSigner(config.im_sdkappid, config.im_secret_key, config.im_admin_identifier)
        self.base_url = config.im_api_base.rstrip("/")
        self.sdkappid = int(config.im_sdkappid)
        self.identifier = config.im_admin_identifier
        self.timeout = max(float(config.im_http_timeout_seconds), 3.5)
        self.limiter = limiter
        self.signer = signer
        if http is None:
            http = new_pool(pool_size, proxy_url=config.im_proxy_url.reveal() if config.im_proxy_url else None,
                            ca_bundle=config.im_ca_bundle)
        self.http = http
        self._timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        self._clock = clock
        self._rng = rng if rng is not None else random.SystemRandom()
        self._on_call = on_call

    def __repr__(self) -> str:
        return f"IMRestClient(base_url={self.base_url!r}, sdkappid={self.sdkappid}, identifier={self.identifier!r})"

    def close(self) -> None:
        self.http.clear()

    # -- the three APIs -------------------------------------------------------------------------

    def destroy_group(self, group_id: str, *, before_send: Callable[[], None] | None = None) -> IMCall:
        """Dismiss a group; raise IMError (kind GONE for 10010) on failure.

        `before_send` runs after the rate limiter's wait, just before each request leaves; if it
        raises, nothing is sent and the exception propagates.
        """
        call = self._call("destroy_group", {"GroupId": group_id}, before_send)
        if call.error_code != 0:
            raise self._error(call)
        return call

    def get_group_info(self, group_ids: list[str]) -> dict[str, GroupProbe]:
        """Probe up to 50 groups; each answer is read from that group's own ErrorCode."""
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return {}
        if len(ids) > MAX_GROUPS_PER_INFO_CALL:
            raise ValueError(f"get_group_info takes at most {MAX_GROUPS_PER_INFO_CALL} groups, got {len(ids)}")
        body = {
            "GroupIdList": ids,
            "ResponseFilter": {"GroupBaseInfoFilter": ["Type", "Name", "Owner_Account", "MemberNum"]},
        }
        call = self._call("get_group_info", body)
        answers = call.body.get("GroupInfo")
        if not isinstance(answers, list):
            if call.error_code != 0:
                raise self._error(call)
            raise IMError("get_group_info", CODE_BAD_ANSWER, "answer has no GroupInfo list",
                          http_status=call.http_status, duration=call.duration)
        probes: dict[str, GroupProbe] = {}
        for item in answers:
            if isinstance(item, dict) and isinstance(item.get("GroupId"), str):
                probes[item["GroupId"]] = _probe(item)
        for gid in ids:
            if gid not in probes:
                probes[gid] = GroupProbe(gid, ProbeState.ERROR, CODE_BAD_ANSWER, "group missing from answer")
        return {gid: probes[gid] for gid in ids}

    def create_group(self, type: str, name: str, owner: str | None = None,  # noqa: A002
                     group_id: str | None = None, members: Iterable[str] = ()) -> str:
        """Create a group and return its ID (the custom one, or the one IM assigned)."""
        body: dict[str, Any] = {"Type": type, "Name": name}
        if owner is not None:
            body["Owner_Account"] = owner
        if group_id is not None:
            body["GroupId"] = group_id
        member_list = [{"Member_Account": m} for m in members]
        if member_list:
            body["MemberList"] = member_list
        call = self._call("create_group", body)
        if call.error_code != 0:
            raise self._error(call)
        created = call.body.get("GroupId")
        if not isinstance(created, str) or not created:
            raise IMError("create_group", CODE_BAD_ANSWER, "answer has no GroupId",
                          http_status=call.http_status, duration=call.duration)
        return created

    # -- transport ------------------------------------------------------------------------------

    def _call(self, api: str, body: dict[str, Any], before_send: Callable[[], None] | None = None) -> IMCall:
        call = self._attempt(api, body, self.signer.current(), before_send)
        if call.error_code in RESIGN_CODES:
            # The cached sig expired or was refused: issue a fresh one and retry exactly once.
            call = self._attempt(api, body, self.signer.force_renew(), before_send)
        return call

    def _attempt(self, api: str, body: dict[str, Any], usersig: str,
                 before_send: Callable[[], None] | None = None) -> IMCall:
        self.limiter.acquire(api)
        if before_send is not None:
            before_send()
        params = {
            "sdkappid": str(self.sdkappid),
            "identifier": self.identifier,
            "usersig": usersig,
            "random": str(self._rng.getrandbits(32)),
            "contenttype": "json",
        }
        url = f"{self.base_url}/v4/{SERVICE}/{api}?{urllib.parse.urlencode(params)}"
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        started = self._clock()
        try:
            resp = self.http.request("POST", url, body=payload, headers=_JSON, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as exc:
            duration = self._clock() - started
            info = redact(f"{type(exc).__name__}: {exc}").replace(usersig, "***")
            call = IMCall(api, None, CODE_NETWORK, info, duration)
            self._record(call)
            raise IMError(api, CODE_NETWORK, info, duration=duration) from None
        duration = self._clock() - started
        call = _parse(api, resp, duration, usersig)
        self._record(call)
        return call

    def _record(self, call: IMCall) -> None:
        if self._on_call is not None:
            self._on_call(call)

    @staticmethod
    def _error(call: IMCall) -> IMError:
        return IMError(call.api, call.error_code, call.error_info, http_status=call.http_status,
                       duration=call.duration)


def _parse(api: str, resp: urllib3.BaseHTTPResponse, duration: float, usersig: str) -> IMCall:
    status = resp.status
    if status != 200:
        return IMCall(api, status, CODE_HTTP_STATUS, f"HTTP {status}", duration)
    try:
        body = json.loads(resp.data)
    except ValueError:
        return IMCall(api, status, CODE_BAD_ANSWER, "answer is not JSON", duration)
    if not isinstance(body, dict) or not isinstance(body.get("ErrorCode"), int):
        return IMCall(api, status, CODE_BAD_ANSWER, "answer has no integer ErrorCode", duration)
    info = redact(str(body.get("ErrorInfo", ""))).replace(usersig, "***")
    return IMCall(api, status, body["ErrorCode"], info, duration, body)


def _probe(item: dict[str, Any]) -> GroupProbe:
    gid = item["GroupId"]
    code = item.get("ErrorCode", 0)
    info = str(item.get("ErrorInfo", ""))
    if not isinstance(code, int):
        return GroupProbe(gid, ProbeState.ERROR, CODE_BAD_ANSWER, "ErrorCode is not an integer")
    if code == 0:
        return GroupProbe(gid, ProbeState.EXISTS, 0, info, item)
    if classify("get_group_info", code) is ErrorKind.GONE:
        return GroupProbe(gid, ProbeState.GONE, code, info)
    return GroupProbe(gid, ProbeState.ERROR, code, info)
