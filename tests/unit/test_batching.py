"""LeaderBatcher: callers that arrive together share one `process` call, each gets its own result."""

from __future__ import annotations

import threading
import time

import pytest

from receiver.batching import LeaderBatcher


class Gate:
    """A `process` that holds its first batch until released, so that later callers queue up."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[int]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list:
        with self._lock:
            self.batches.append(list(items))
            first = len(self.batches) == 1
        if first:
            self.first_started.set()
            assert self.release.wait(10)
        if self.fail_on == "batch" and not first:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"bad {i}") if i == self.fail_on else i * 10 for i in items]


def submit_all(batcher: LeaderBatcher, gate: Gate, items: list[int]) -> tuple[dict, dict]:
    results: dict[int, object] = {}
    errors: dict[int, BaseException] = {}

    def go(i: int) -> None:
        try:
            results[i] = batcher.submit(i, gate)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            errors[i] = exc

    first = threading.Thread(target=go, args=(items[0],))
    first.start()
    assert gate.first_started.wait(10)  # the first caller leads, and is held inside `process`
    others = [threading.Thread(target=go, args=(i,)) for i in items[1:]]
    for t in others:
        t.start()
    deadline = time.monotonic() + 10
    while len(batcher._queue) < len(items) - 1 and time.monotonic() < deadline:
        time.sleep(0.005)  # every other caller is queued behind the held batch
    gate.release.set()
    for t in [first, *others]:
        t.join(10)
        assert not t.is_alive()
    return results, errors


def test_callers_queued_behind_a_batch_share_the_next_one_and_each_gets_its_own_result():
    batcher: LeaderBatcher[int, int] = LeaderBatcher()
    gate = Gate()
    results, errors = submit_all(batcher, gate, list(range(9)))
    assert errors == {}
    assert results == {i: i * 10 for i in range(9)}
    assert gate.batches[0] == [0] and sorted(gate.batches[1]) == list(range(1, 9))
    assert batcher.batches == 2 and batcher.items == 9


def test_a_queue_longer_than_max_batch_is_led_in_turns_by_the_oldest_waiter():
    batcher: LeaderBatcher[int, int] = LeaderBatcher(max_batch=3)
    gate = Gate()
    results, errors = submit_all(batcher, gate, list(range(8)))
    assert errors == {} and results == {i: i * 10 for i in range(8)}
    assert [len(b) for b in gate.batches] == [1, 3, 3, 1]
    assert sorted(i for b in gate.batches for i in b) == list(range(8))  # each item processed once


def test_an_error_returned_for_one_item_is_raised_to_that_caller_only():
    batcher: LeaderBatcher[int, int] = LeaderBatcher()
    gate = Gate(fail_on=4)
    results, errors = submit_all(batcher, gate, list(range(6)))
    assert set(errors) == {4} and str(errors[4]) == "bad 4"
    assert results == {i: i * 10 for i in range(6) if i != 4}


def test_a_batch_that_raises_fails_each_of_its_callers_and_the_batcher_goes_on():
    batcher: LeaderBatcher[int, int] = LeaderBatcher()
    gate = Gate(fail_on="batch")
    results, errors = submit_all(batcher, gate, list(range(5)))
    assert results == {0: 0}
    assert set(errors) == {1, 2, 3, 4} and all(isinstance(e, RuntimeError) for e in errors.values())
    with pytest.raises(RuntimeError):
        batcher.submit(7, gate)  # no batch is left in progress: this caller leads its own
    assert batcher.submit(8, lambda items: [i + 1 for i in items]) == 9


def test_a_waiter_whose_batch_does_not_finish_in_time_gives_up_and_later_callers_still_get_through():
    from receiver.batching import BatchTimeout

    batcher: LeaderBatcher[int, int] = LeaderBatcher()
    gate = Gate()
    leader_result: list = []
    leader = threading.Thread(target=lambda: leader_result.append(batcher.submit(1, gate)))
    leader.start()
    assert gate.first_started.wait(5)  # the leader's batch [1] hangs, as on a database gone silent
    started = time.monotonic()
    with pytest.raises(BatchTimeout):
        batcher.submit(2, gate, timeout=0.2)  # queued behind it, never taken: withdrawn
    assert 0.15 < time.monotonic() - started < 2
    gate.release.set()
    leader.join(5)
    assert leader_result == [10]
    assert batcher.submit(3, gate, timeout=5) == 30  # nobody is left leading a dead queue
    assert gate.batches == [[1], [3]]  # 2 was withdrawn before any batch took it


def test_a_waiter_made_leader_as_it_gives_up_hands_the_lead_on():
    from receiver.batching import _Pending

    batcher: LeaderBatcher[int, int] = LeaderBatcher()
    first, second = _Pending(1), _Pending(2)
    batcher._queue.extend([first, second])
    batcher._leading = True
    first.lead = True  # what `_lead` does for the oldest waiter when its batch ends
    first.done.release()
    assert batcher._give_up(first) is True
    assert list(batcher._queue) == [second] and second.lead and second.done.acquire(blocking=False)
    assert batcher._give_up(second) is True  # it gives up too, and no one is left: nobody leads
    assert list(batcher._queue) == [] and batcher._leading is False


def test_many_callers_with_timeouts_never_deadlock_and_each_result_is_its_own():
    from receiver.batching import BatchTimeout

    batcher: LeaderBatcher[int, int] = LeaderBatcher()
    rng_lock = threading.Lock()
    import random

    rng = random.Random(11)

    def process(items):
        with rng_lock:
            pause = rng.choice([0, 0, 0.001, 0.02, 0.06])
        time.sleep(pause)
        return [i * 10 for i in items]

    outcomes: dict[int, object] = {}

    def go(i):
        with rng_lock:
            timeout = rng.choice([None, 0.005, 0.02, 0.05, 1.0])
        try:
            outcomes[i] = batcher.submit(i, process, timeout)
        except BatchTimeout:
            outcomes[i] = "timeout"

    threads = [threading.Thread(target=go, args=(i,)) for i in range(400)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)  # nobody stuck behind a lead that went nowhere
    assert all(v == "timeout" or v == i * 10 for i, v in outcomes.items()) and len(outcomes) == 400
    assert batcher.submit(-1, process, timeout=2) == -10
