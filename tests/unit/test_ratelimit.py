"""Rate limiter: even pacing per API under a fake clock, and the moving-window ceiling."""

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


def paced(per_second: float, fake: FakeTime) -> RateLimiter:
    return RateLimiter(MemoryPacer(1.0 / per_second, clock=fake.clock), sleep=fake.sleep, clock=fake.clock)


def test_calls_are_spread_evenly():
    fake = FakeTime()
    limiter = paced(100, fake)
    sent = []
    for _ in range(300):
        limiter.acquire("destroy_group")
        sent.append(fake.now)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) == pytest.approx(0.01) and max(gaps) == pytest.approx(0.01)


def test_no_calendar_second_exceeds_the_rate_even_with_a_phase_shift():
    fake = FakeTime()
    fake.now = 1000.997
    limiter = paced(195, fake)
    per_second: Counter[int] = Counter()
    for _ in range(2000):
        limiter.acquire("destroy_group")
        per_second[int(fake.now + 0.004)] += 1  # 4 ms of transit
    assert max(per_second.values()) <= 196


def test_first_call_does_not_wait_and_returns_waited_seconds():
    fake = FakeTime()
    limiter = paced(10, fake)
    assert limiter.acquire("x") == 0.0
    assert limiter.acquire("x") == pytest.approx(0.1)


def test_each_api_has_its_own_budget():
    fake = FakeTime()
    limiter = paced(10, fake)
    limiter.acquire("destroy_group")
    assert limiter.acquire("get_group_info") == 0.0
    assert limiter.acquire("destroy_group") == pytest.approx(0.1)


def test_idle_time_is_not_banked_as_a_burst():
    fake = FakeTime()
    limiter = paced(10, fake)
    limiter.acquire("x")
    fake.now += 5
    assert limiter.acquire("x") == 0.0
    assert limiter.acquire("x") == pytest.approx(0.1)


def test_concurrent_threads_get_distinct_slots():
    pacer = MemoryPacer(0.01, clock=lambda: 0.0)
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
    assert sorted(round(w, 6) for w in waits) == [round(i * 0.01, 6) for i in range(200)]


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

    limiter = RateLimiter(MemoryPacer(0.0, clock=fake.clock), ScriptedCap(), sleep=fake.sleep, clock=fake.clock)
    assert limiter.acquire("x") == pytest.approx(0.04)


def test_build_limiter_uses_memory_without_redis_url():
    limiter = build_limiter(Config(im_rate_limit_per_second=200))
    assert isinstance(limiter.pacer, MemoryPacer)
    assert limiter.pacer.interval == pytest.approx(1 / 195)


def test_build_limiter_uses_redis_with_redis_url():
    limiter = build_limiter(Config(redis_url=Secret("redis://127.0.0.1:6379/0")))
    assert isinstance(limiter.pacer, RedisPacer)


@pytest.mark.parametrize("kwargs", [{"per_second": 0}, {"per_second": 10, "margin": 0.6}])
def test_build_rate_limiter_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        build_rate_limiter(**kwargs)
