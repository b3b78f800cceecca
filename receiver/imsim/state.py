"""In-memory state of the IM simulator: groups, per-second call counts and statistics."""

from __future__ import annotations

import random
import string
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

GROUP_TYPES = ("Private", "Public", "ChatRoom", "AVChatRoom", "Community")
_TYPE_DIGIT = {"Private": "1", "Public": "2", "ChatRoom": "3", "AVChatRoom": "a", "Community": "c"}
_ID_CHARS = string.ascii_uppercase + string.digits
SECONDS_KEPT = 120


@dataclass
class SimGroup:
    group_id: str
    type: str
    name: str
    owner: str | None
    members: list[str]
    created_at: int
    destroyed: bool = False


@dataclass
class ApiCounters:
    calls: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    per_second: dict[int, int] = field(default_factory=dict)
    max_per_second: int = 0


class SimState:
    """Everything the simulator remembers; every method is thread-safe."""

    def __init__(self, *, seed: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.groups: dict[str, SimGroup] = {}
        self.apis: defaultdict[str, ApiCounters] = defaultdict(ApiCounters)
        self.callbacks: Counter[str] = Counter()

    def reset(self) -> None:
        with self.lock:
            self.groups.clear()
            self.apis.clear()
            self.callbacks.clear()

    # -- rate accounting ------------------------------------------------------------------------

    def count_call(self, api: str, received_at: float) -> int:
        """Count a call received at `received_at`; return how many this calendar second had."""
        second = int(received_at)
        with self.lock:
            counters = self.apis[api]
            counters.calls += 1
            n = counters.per_second.get(second, 0) + 1
            counters.per_second[second] = n
            counters.max_per_second = max(counters.max_per_second, n)
            if len(counters.per_second) > SECONDS_KEPT:
                for old in sorted(counters.per_second)[:-SECONDS_KEPT]:
                    del counters.per_second[old]
            return n

    def count_error(self, api: str, code: int) -> None:
        with self.lock:
            self.apis[api].errors[code] += 1

    def count_callback(self, outcome: str, n: int = 1) -> None:
        with self.lock:
            self.callbacks[outcome] += n

    def chance(self, rate: float) -> bool:
        with self.lock:
            return rate > 0 and self.rng.random() < rate

    # -- groups ---------------------------------------------------------------------------------

    def new_group_id(self, group_type: str) -> str:
        with self.lock:
            while True:
                tail = "".join(self.rng.choice(_ID_CHARS) for _ in range(8))
                gid = (f"@TGS#_@TGS#c{tail}" if group_type == "Community"
                       else f"@TGS#{_TYPE_DIGIT[group_type]}{tail}")
                if gid not in self.groups:
                    return gid

    def alive(self, group_id: str) -> SimGroup | None:
        with self.lock:
            group = self.groups.get(group_id)
            return group if group is not None and not group.destroyed else None

    def add(self, group: SimGroup) -> bool:
        """Store a new group; False if a live group already has that ID."""
        with self.lock:
            if self.alive(group.group_id) is not None:
                return False
            self.groups[group.group_id] = group
            return True

    def destroy(self, group_id: str) -> SimGroup | None:
        """Mark a live group destroyed and return it; None if there was none."""
        with self.lock:
            group = self.alive(group_id)
            if group is not None:
                group.destroyed = True
            return group

    # -- reporting ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.lock:
            alive = sum(1 for g in self.groups.values() if not g.destroyed)
            return {
                "apis": {
                    api: {
                        "calls": c.calls,
                        "errors": {str(code): n for code, n in sorted(c.errors.items())},
                        "max_per_second": c.max_per_second,
                        "per_second": {str(s): n for s, n in sorted(c.per_second.items())},
                    }
                    for api, c in sorted(self.apis.items())
                },
                "callbacks": {k: self.callbacks.get(k, 0) for k in
                              ("queued", "sent", "dropped", "duplicated", "failed", "retried", "non_200")},
                "groups": {"alive": alive, "destroyed": len(self.groups) - alive},
            }
