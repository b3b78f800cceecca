"""Per-API rate limiting for IM REST calls: calendar-second slots plus a hard moving-window ceiling.

Tencent counts calls per second *on receipt*. A plain moving window lets a whole second's budget
leave in one burst, and network jitter can then land two bursts in the same receiving second.
So each calendar second (of the pacer's clock: Redis's when shared, else this host's, both kept
by NTP like IM's) holds `slots` evenly spaced slots, all in its first `active` part (0.9 s by
default), and one call leaves per slot. A call that reaches IM less than the quiet rest of the
second (100 ms) after it left is therefore counted in the second it left, whatever the jitter,
and no second gets more than `slots` calls — one fewer than the ceiling by default, as a spare.
A `limits` moving window at the ceiling stays behind the pacer as a safety net.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Protocol

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

DEFAULT_SPARE = 1  # calls per second left unused under the ceiling
DEFAULT_ACTIVE = 0.9  # calls leave in the first 900 ms of each second; the rest absorbs transit time
# A clock seen this far behind the last reading stepped back (NTP): the slots booked by the old
# clock are dropped rather than waited for.
_STEP_BACK = 1.0

_PACE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local active = tonumber(ARGV[2])
local saved = redis.call('GET', KEYS[1]) or '0 0'
local tat, last = string.match(saved, '^(%%S+) (%%S+)$')
tat, last = tonumber(tat) or 0, tonumber(last) or 0
local slot = now
if tat > now and now >= last - %(step_back)s then slot = tat end
if slot - math.floor(slot) >= active - interval / 2 then slot = math.floor(slot) + 1 end
local nxt = slot + interval
redis.call('SET', KEYS[1], string.format('%%.6f %%.6f', nxt, math.max(now, last)),
           'PX', math.ceil((nxt - now) * 1000) + 1000)
return string.format('%%.6f', slot - now)
""" % {"step_back": _STEP_BACK}


def next_slot(now: float, booked: float | None, last_now: float, interval: float, active: float) -> float:
    """The slot for a call asked for at `now`, when the next free one is `booked` (the Lua twin above).

    However far ahead the booked slots run (many callers waiting, a low rate), they are honoured;
    only a clock seen stepping back (`now` well behind `last_now`) starts again from now.
    """
    slot = booked if booked is not None and booked > now and now >= last_now - _STEP_BACK else now
    # Half an interval of tolerance: the last slot of a second is at `active - interval`, and
    # summed intervals drift by rounding.
    if slot - math.floor(slot) >= active - interval / 2:
        slot = math.floor(slot) + 1.0
    return slot


class RateLimiterUnavailable(RuntimeError):
    """The shared rate-limit store (Redis) could not be reached."""


class Limiter(Protocol):
    def acquire(self, api: str) -> float: ...


class Pacer(Protocol):
    def reserve(self, api: str) -> float:
        """Claim the next free slot for `api`; return the seconds until it starts."""
        ...


class MemoryPacer:
    """In-process pacer: `slots_per_second` slots in the first `active` part of each second, per API."""

    def __init__(self, slots_per_second: float, *, active: float = DEFAULT_ACTIVE,
                 clock: Callable[[], float] = time.time) -> None:
        self.interval = active / slots_per_second
        self.active = active
        self._clock = clock
        self._next: dict[str, float] = {}
        self._last_now = float("-inf")
        self._lock = threading.Lock()

    def reserve(self, api: str) -> float:
        with self._lock:
            now = self._clock()
            slot = next_slot(now, self._next.get(api), self._last_now, self.interval, self.active)
            self._last_now = max(self._last_now, now)
            self._next[api] = slot + self.interval
            return slot - now


class RedisPacer:
    """Pacer shared by every process and host using the same Redis (and Redis's own clock)."""

    def __init__(self, redis_client, slots_per_second: float, *, active: float = DEFAULT_ACTIVE,  # noqa: ANN001
                 key_prefix: str) -> None:
        self.interval = active / slots_per_second
        self.active = active
        self.key_prefix = key_prefix
        self._script = redis_client.register_script(_PACE_SCRIPT)

    def reserve(self, api: str) -> float:
        try:
            return float(self._script(keys=[f"{self.key_prefix}:pace:{api}"],
                                      args=[repr(self.interval), repr(self.active)]))
        except Exception as exc:  # redis.RedisError and socket errors
            raise RateLimiterUnavailable(f"rate-limit store unreachable: {type(exc).__name__}") from None


class WindowCap:
    """Hard ceiling: at most `per_second` acquisitions in any moving one-second window."""

    def __init__(self, storage: MemoryStorage | RedisStorage, per_second: int, *,
                 key_prefix: str) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._item = RateLimitItemPerSecond(per_second, 1, namespace=key_prefix)

    def hit(self, api: str) -> bool:
        try:
            return self._limiter.hit(self._item, api)
        except Exception as exc:
            raise RateLimiterUnavailable(f"rate-limit store unreachable: {type(exc).__name__}") from None

    def retry_in(self, api: str) -> float:
        reset = self._limiter.get_window_stats(self._item, api).reset_time
        return max(0.0, reset - time.time())


class RateLimiter:
    """Block until a call to `api` is allowed: wait for a paced slot, then pass the ceiling."""

    def __init__(self, pacer: Pacer, cap: WindowCap | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pacer = pacer
        self.cap = cap
        self._sleep = sleep
        self._clock = clock

    def acquire(self, api: str) -> float:
        """Wait until a call to `api` may be sent; return the seconds waited."""
        start = self._clock()
        wait = self.pacer.reserve(api)
        if wait > 0:
            self._sleep(wait)
        if self.cap is not None:
            while not self.cap.hit(api):
                self._sleep(min(max(self.cap.retry_in(api), 0.001), 0.05))
        return self._clock() - start

    def __repr__(self) -> str:
        return f"RateLimiter(pacer={type(self.pacer).__name__}, cap={self.cap is not None})"


class UnlimitedLimiter:
    """A limiter that never waits (tests, one-off CLI probes)."""

    def __init__(self) -> None:
        self.acquired: list[str] = []

    def acquire(self, api: str) -> float:
        self.acquired.append(api)
        return 0.0


def build_limiter(config, *, spare: int = DEFAULT_SPARE, key_prefix: str = "imrl",  # noqa: ANN001
                  sleep: Callable[[float], None] = time.sleep) -> RateLimiter:
    """Build the limiter for `config`: shared through Redis when REDIS_URL is set, else in-process."""
    per_second = int(config.im_rate_limit_per_second)
    return build_rate_limiter(per_second, redis_url=config.redis_url.reveal() if config.redis_url else None,
                              spare=spare, key_prefix=key_prefix, sleep=sleep)


def build_rate_limiter(per_second: int, *, redis_url: str | None = None, spare: int = DEFAULT_SPARE,
                       active: float = DEFAULT_ACTIVE, key_prefix: str = "imrl",
                       sleep: Callable[[float], None] = time.sleep) -> RateLimiter:
    """Build a limiter with `per_second - spare` slots a second (at least one) under a hard `per_second` ceiling."""
    if per_second < 1:
        raise ValueError("per_second must be >= 1")
    if spare < 0 or not 0.5 <= active <= 1.0:
        raise ValueError("spare must be >= 0 and active in [0.5, 1]")
    slots = max(1, per_second - spare)
    if redis_url:
        storage = storage_from_string(redis_url, key_prefix=key_prefix)
        assert isinstance(storage, RedisStorage)
        pacer: Pacer = RedisPacer(storage.get_connection(), slots, active=active, key_prefix=key_prefix)
    else:
        storage = storage_from_string("memory://")
        pacer = MemoryPacer(slots, active=active)
    return RateLimiter(pacer, WindowCap(storage, per_second, key_prefix=key_prefix), sleep=sleep)
