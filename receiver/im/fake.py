"""In-memory stand-in for IMRestClient with scriptable per-group errors, for unit tests."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from receiver.im.client import MAX_GROUPS_PER_INFO_CALL, GroupProbe, IMCall, ProbeState
from receiver.im.errors import ErrorKind, IMError, classify
from receiver.im.ratelimit import Limiter

# A scripted outcome: an ErrorCode (0 = behave normally) or a ready-made IMError to raise.
Outcome = int | IMError


@dataclass
class FakeGroup:
    group_id: str
    type: str = "Public"
    name: str = ""
    owner: str | None = None
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecordedCall:
    api: str
    args: tuple


class FakeIMClient:
    """Same interface as IMRestClient; groups live in a dict, failures are scripted per group."""

    def __init__(self, *, limiter: Limiter | None = None,
                 on_destroyed: Callable[[FakeGroup], None] | None = None) -> None:
        self.groups: dict[str, FakeGroup] = {}
        self.destroyed: list[FakeGroup] = []
        self.calls: list[RecordedCall] = []
        self.limiter = limiter
        self.on_destroyed = on_destroyed
        self._scripts: dict[tuple[str, str | None], deque[Outcome]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- arranging ------------------------------------------------------------------------------

    def add_group(self, group_id: str, *, type: str = "Public", name: str = "",  # noqa: A002
                  owner: str | None = None, members: Iterable[str] = ()) -> FakeGroup:
        group = FakeGroup(group_id, type, name, owner, list(members))
        with self._lock:
            self.groups[group_id] = group
        return group

    def script(self, api: str, group_id: str | None, *outcomes: Outcome) -> None:
        """Queue outcomes for the next calls of `api` on `group_id` (None: the whole call)."""
        with self._lock:
            self._scripts[(api, group_id)].extend(outcomes)

    def fail_next(self, group_id: str, code: int, *, api: str = "destroy_group", times: int = 1) -> None:
        self.script(api, group_id, *([code] * times))

    def calls_to(self, api: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.api == api]

    # -- the client interface -------------------------------------------------------------------

    def destroy_group(self, group_id: str, *, before_send: Callable[[], None] | None = None) -> IMCall:
        if self.limiter is not None:  # as the real client: the wait first, then `before_send`
            self.limiter.acquire("destroy_group")
        if before_send is not None:
            before_send()
        with self._lock:
            self._enter("destroy_group", (group_id,), paced=True)
            self._raise_scripted("destroy_group", None)
            self._raise_scripted("destroy_group", group_id)
            group = self.groups.pop(group_id, None)
            if group is None:
                raise IMError("destroy_group", 10010, "group does not exist or has been dismissed")
            self.destroyed.append(group)
        if self.on_destroyed is not None:
            self.on_destroyed(group)
        return _ok("destroy_group")

    def get_group_info(self, group_ids: list[str]) -> dict[str, GroupProbe]:
        ids = list(dict.fromkeys(group_ids))
        if len(ids) > MAX_GROUPS_PER_INFO_CALL:
            raise ValueError(f"get_group_info takes at most {MAX_GROUPS_PER_INFO_CALL} groups, got {len(ids)}")
        if not ids:
            return {}
        with self._lock:
            self._enter("get_group_info", (tuple(ids),))
            self._raise_scripted("get_group_info", None)
            out: dict[str, GroupProbe] = {}
            for gid in ids:
                code = self._pop_code("get_group_info", gid)
                if code:
                    kind = classify("get_group_info", code)
                    state = ProbeState.GONE if kind is ErrorKind.GONE else ProbeState.ERROR
                    out[gid] = GroupProbe(gid, state, code, "scripted")
                elif gid in self.groups:
                    g = self.groups[gid]
                    out[gid] = GroupProbe(gid, ProbeState.EXISTS, 0, "", {
                        "GroupId": gid, "Type": g.type, "Name": g.name, "Owner_Account": g.owner or "",
                        "MemberNum": len(g.members)})
                else:
                    out[gid] = GroupProbe(gid, ProbeState.GONE, 10010, "group does not exist")
            return out

    def create_group(self, type: str, name: str, owner: str | None = None,  # noqa: A002
                     group_id: str | None = None, members: Iterable[str] = ()) -> str:
        with self._lock:
            self._enter("create_group", (type, name, owner, group_id, tuple(members)))
            self._raise_scripted("create_group", None)
            gid = group_id or f"@TGS#FAKE{next(self._ids):06d}"
            if gid in self.groups:
                raise IMError("create_group", 10021, "group id already used")
            people = ([owner] if owner else []) + [m for m in members if m != owner]
            self.add_group(gid, type=type, name=name, owner=owner, members=people)
            return gid

    # -- internals ------------------------------------------------------------------------------

    def _enter(self, api: str, args: tuple, paced: bool = False) -> None:
        if self.limiter is not None and not paced:
            self.limiter.acquire(api)
        self.calls.append(RecordedCall(api, args))

    def _pop_code(self, api: str, key: str | None) -> int:
        queue = self._scripts.get((api, key))
        if not queue:
            return 0
        outcome = queue.popleft()
        if isinstance(outcome, IMError):
            raise outcome
        return outcome

    def _raise_scripted(self, api: str, key: str | None) -> None:
        code = self._pop_code(api, key)
        if code:
            raise IMError(api, code, "scripted")

    def __repr__(self) -> str:
        return f"FakeIMClient(groups={len(self.groups)}, calls={len(self.calls)})"


def _ok(api: str) -> IMCall:
    return IMCall(api, 200, 0, "", 0.0, {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})
