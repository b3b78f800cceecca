"""Four sender processes sharing one Redis-backed limiter stay under the simulator's per-second ceiling."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter

import pytest
import redis

from receiver.im.client import IMRestClient
from receiver.im.errors import IMError
from receiver.im.ratelimit import build_rate_limiter
from tests.fixtures.imsim import client_config

REDIS_URL = "redis://127.0.0.1:6379/0"
CEILING = 200
SENDERS = 4
RUN_SECONDS = 3.0


def _sender(sim_url: str, prefix: str, ready, go, start_at, results) -> None:  # noqa: ANN001
    """Child process: send destroy_group calls as fast as the shared limiter allows."""

    class Sim:
        url = sim_url

    limiter = build_rate_limiter(CEILING, redis_url=REDIS_URL, key_prefix=prefix)
    client = IMRestClient(client_config(Sim), limiter=limiter)
    codes: Counter[int] = Counter()
    ready.put(True)
    go.wait()
    time.sleep(max(0.0, start_at.value - time.time()))
    deadline = start_at.value + RUN_SECONDS
    while time.time() < deadline:
        try:
            client.destroy_group("@TGS#2NOSUCHGRP")
        except IMError as err:
            codes[err.code] += 1
        else:
            codes[0] += 1
    client.close()
    results.put(dict(codes))


@pytest.fixture
def redis_prefix():
    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"test-rl-{uuid.uuid4().hex}"
    yield prefix
    for key in conn.scan_iter(f"*{prefix}*"):
        conn.delete(key)
    conn.close()


def test_processes_share_the_ceiling_and_are_not_held_far_below_it(imsim_factory, redis_prefix):
    sim = imsim_factory(rate_limit=CEILING)
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, start_at = ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_sender, args=(sim.url, redis_prefix, ready, go, start_at, results))
             for _ in range(SENDERS)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=20)
        start_at.value = time.time() + 0.1
        go.set()
        codes: Counter[int] = Counter()
        for _ in procs:
            codes.update(results.get(timeout=RUN_SECONDS + 10))
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()

    api = sim.state.stats()["apis"]["destroy_group"]
    total = sum(codes.values())
    achieved = total / (CEILING * RUN_SECONDS)
    print(f"\nrate test: {total} calls in {RUN_SECONDS}s by {SENDERS} processes, "
          f"max {api['max_per_second']}/s (ceiling {CEILING}), achieved {achieved:.1%}, "
          f"per second {api['per_second']}, codes {dict(codes)}")
    assert api["max_per_second"] <= CEILING
    assert 60007 not in codes and api["errors"].get("60007", 0) == 0
    assert codes[10010] == total == api["calls"]
    # How close to the ceiling the senders get is a benchmark's question (bench/dispatch: 199 calls
    # a second), not a test's: on a loaded machine four processes may not even make 95 % (seen:
    # 91.8 %, with two other processes busy). Half the ceiling still catches a shared limiter that
    # hands each process only its own share (25 %) or serialises them.
    assert achieved >= 0.5
