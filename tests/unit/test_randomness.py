"""random_bytes: the OS's randomness from a buffer; never the same bytes twice, not even across a fork."""

from __future__ import annotations

import os
import threading

import pytest

from receiver import randomness
from receiver.models import new_id


def test_no_bytes_are_handed_out_twice_across_threads_and_refills():
    seen: list[bytes] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [randomness.random_bytes(10) for _ in range(2000)]  # 20 kB: several refills
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 16000 and all(len(b) == 10 for b in seen)
    assert len(set(seen)) == len(seen)


def test_any_size_is_served_whole():
    assert [len(randomness.random_bytes(n)) for n in (0, 1, 4095, 4096, 4097, 10000)] == [0, 1, 4095, 4096, 4097, 10000]


def test_ulids_stay_unique_and_sortable():
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 26 for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_reuses_its_parents_buffer():
    randomness.random_bytes(1)  # the buffer now holds the rest of a 4 KiB read
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, randomness.random_bytes(32))
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.waitpid(pid, 0)[1] == 0
    child = os.read(read_end, 64)
    os.close(read_end)
    parent = randomness.random_bytes(32)  # what the parent hands out next
    assert len(child) == 32 and child != parent
