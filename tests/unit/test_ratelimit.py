"""Rate limiter: calendar-second slots per API under a fake clock, and the moving-window ceiling."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from receiver.config import Config, Secret
from receiver.im.ratelimit import (
    MemoryPacer,
    RateLimiter,
    RedisPacer,
    WindowCap,
    build_limiter,
    build_rate_limiter,
)
from limits.storage import MemoryStorage


class FakeTime:
    """A clock whose sleep advances it; thread-safe enough for the lock-protected pacer."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def paced(slots: float, fake: FakeTime, active: float = 0.9) -> RateLimiter:
    return RateLimiter(MemoryPacer(slots, active=active, clock=fake.clock), sleep=fake.sleep, clock=fake.clock)


def send(limiter: RateLimiter, fake: FakeTime, n: int) -> list[float]:
    sent = []
    for _ in range(n):
        limiter.acquire("destroy_group")
        sent.append(fake.now)
    return sent


def test_calls_are_spread_evenly_over_the_first_part_of_each_second():
    fake = FakeTime()
    sent = send(paced(100, fake), fake, 300)
    gaps = [round(b - a, 6) for a, b in zip(sent, sent[1:])]
    # 100 slots 9 ms apart in [0, 0.9) of each second, then the quiet 100 ms (gap 0.109 s).
    assert set(gaps) == {0.009, 0.109} and gaps.count(0.109) == 2
    assert all(t - int(t) < 0.9 for t in sent)


@pytest.mark.parametrize("start", [1000.0, 1000.3, 1000.899, 1000.9, 1000.997])
@pytest.mark.parametrize("transit", [0.0, 0.004, 0.099])
def test_no_calendar_second_gets_more_than_its_slots_on_receipt(start, transit):
    """Whatever the phase at which sending starts, a call under 100 ms in transit lands in the
    second it left, so no receiving second counts more than the slots."""
    fake = FakeTime()
    fake.now = start
    per_second: Counter[int] = Counter(int(t + transit) for t in send(paced(199, fake), fake, 2000))
    assert max(per_second.values()) == 199
    assert sum(per_second.values()) == 2000


def test_a_second_in_the_middle_uses_every_slot():
    fake = FakeTime()
    sent = send(paced(199, fake), fake, 1000)
    per_second = Counter(int(t) for t in sent)
    assert sorted(per_second.values())[1:-1] == [199] * (len(per_second) - 2)


def test_first_call_does_not_wait_and_returns_waited_seconds():
    fake = FakeTime()
    limiter = paced(10, fake)
    assert limiter.acquire("x") == 0.0
    assert limiter.acquire("x") == pytest.approx(0.09)


def test_each_api_has_its_own_budget():
    fake = FakeTime()
    limiter = paced(10, fake)
    limiter.acquire("destroy_group")
    assert limiter.acquire("get_group_info") == 0.0
    assert limiter.acquire("destroy_group") == pytest.approx(0.09)


def test_idle_time_is_not_banked_as_a_burst():
    fake = FakeTime()
    limiter = paced(10, fake)
    limiter.acquire("x")
    fake.now += 5
    assert limiter.acquire("x") == 0.0
    assert limiter.acquire("x") == pytest.approx(0.09)


def test_a_request_in_the_quiet_part_waits_for_the_next_second():
    fake = FakeTime()
    fake.now = 1000.95
    limiter = paced(10, fake)
    assert limiter.acquire("x") == pytest.approx(0.05)
    assert fake.now == pytest.approx(1001.0)


def test_many_waiting_callers_are_spread_however_far_ahead_they_book():
    """A low rate with many callers books slots seconds ahead: they must all be honoured."""
    pacer = MemoryPacer(9, clock=lambda: 1000.0)
    slots = [1000.0 + pacer.reserve("x") for _ in range(64)]
    per_second = Counter(int(t) for t in slots)
    assert max(per_second.values()) == 9 and len(set(slots)) == 64


def test_a_clock_stepped_back_does_not_stall_the_pacer():
    fake = FakeTime()
    limiter = paced(10, fake)
    limiter.acquire("x")
    fake.now -= 30  # NTP stepped the clock back
    assert limiter.acquire("x") == 0.0


def test_concurrent_threads_get_distinct_slots():
    pacer = MemoryPacer(100, clock=lambda: 0.0)
    waits: list[float] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(50):
            w = pacer.reserve("x")
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(round(w, 6) for w in waits) == [round(s + i * 0.009, 6) for s in (0, 1) for i in range(100)]


def test_window_cap_blocks_beyond_the_ceiling():
    storage = MemoryStorage()
    try:
        cap = WindowCap(storage, 5, key_prefix="t-cap")
        assert [cap.hit("x") for _ in range(6)] == [True] * 5 + [False]
        assert cap.hit("y")
        assert 0 < cap.retry_in("x") <= 1.0
    finally:
        storage.timer.cancel()


def test_limiter_waits_for_the_cap_when_pacing_allows_too_much():
    fake = FakeTime()

    class ScriptedCap:
        answers = [False, False, True]

        def hit(self, api: str) -> bool:
            return self.answers.pop(0)

        def retry_in(self, api: str) -> float:
            return 0.02

    limiter = RateLimiter(MemoryPacer(1e9, clock=fake.clock), ScriptedCap(), sleep=fake.sleep, clock=fake.clock)
    assert limiter.acquire("x") == pytest.approx(0.04)


def test_build_limiter_uses_memory_without_redis_url():
    limiter = build_limiter(Config(im_rate_limit_per_second=200))
    assert isinstance(limiter.pacer, MemoryPacer)
    assert limiter.pacer.interval == pytest.approx(0.9 / 199)  # one call a second spare


def test_build_limiter_uses_redis_with_redis_url():
    limiter = build_limiter(Config(redis_url=Secret("redis://127.0.0.1:6379/0")))
    assert isinstance(limiter.pacer, RedisPacer)


@pytest.mark.parametrize("kwargs", [{"per_second": 0}, {"per_second": 10, "spare": -1},
                                    {"per_second": 10, "active": 0.2}])
def test_build_rate_limiter_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        build_rate_limiter(**kwargs)
