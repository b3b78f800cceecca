"""The ingest bench's check for lopsided rounds (wrk's connections on one gunicorn worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.ingest import busiest_worker_share, lopsided, worker_cpu


def test_even_workers_are_not_lopsided():
    share = busiest_worker_share({1: 10.0, 2: 10.0}, {1: 14.0, 2: 13.0})
    assert share == 4.0 / 7.0
    assert not lopsided(share, 2)


def test_one_worker_doing_the_round_alone_is_lopsided():
    # the measured shape: one worker busy, the other one's CPU almost flat
    share = busiest_worker_share({1: 10.0, 2: 10.0}, {1: 19.5, 2: 10.2})
    assert share > 0.97
    assert lopsided(share, 2)


def test_the_bound_scales_with_the_workers():
    # 3 workers: even is a third each; one worker with 60 % did the work of two
    share = busiest_worker_share({1: 0.0, 2: 0.0, 3: 0.0}, {1: 6.0, 2: 2.0, 3: 2.0})
    assert share == 0.6
    assert lopsided(share, 3)
    assert not lopsided(share, 2)


def test_nothing_to_compare_is_not_lopsided():
    assert busiest_worker_share({}, {1: 5.0}) is None
    assert busiest_worker_share({1: 1.0, 2: 1.0}, {1: 1.0, 2: 1.0}) is None
    assert not lopsided(None, 2)
    assert not lopsided(1.0, 1)


def test_worker_cpu_reads_the_children_of_a_process():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        used = 0.0
        while time.monotonic() < deadline:
            used = worker_cpu(os.getpid()).get(child.pid, 0.0)
            if used >= 0.2:
                break
            time.sleep(0.05)
        assert used >= 0.2
        assert os.getpid() not in worker_cpu(os.getpid())
    finally:
        child.kill()
        child.wait()
