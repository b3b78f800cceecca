"""Leader/follower batching: threads that arrive together share one piece of work (a transaction).

Each thread submits its item. Whichever finds no batch in progress leads: it takes everything
queued (its own item included), runs `process` once for all of them, and wakes the others with
their own result. If more arrived meanwhile, the oldest waiter leads the next batch, so no thread
works for others for long. No extra thread, and nothing is acknowledged before `process` returns.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Pending(Generic[T]):
    """One submitted item; `done` is held until the item's result (or its turn to lead) is ready.

    A plain lock, acquired at creation and released by whichever thread finishes the item: the
    cheapest wake-up the threading module has (an Event is a Condition around a Lock, and its
    waiters allocate a lock of their own). It is released once per wake-up, and the woken
    thread's acquire holds it again, ready for a next wait.
    """

    __slots__ = ("item", "done", "lead", "result", "error", "finished")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()
        self.lead = False  # woken to lead the next batch rather than with a result
        self.result: object = None
        self.error: BaseException | None = None
        self.finished = False  # result or error set, about to be (or) released


class BatchTimeout(Exception):
    """The item was not processed within the caller's timeout (its batch may still finish it)."""


class LeaderBatcher(Generic[T, R]):
    def __init__(self, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Pending[T]] = deque()
        self._leading = False
        self.batches = 0
        self.items = 0

    def submit(self, item: T, process: Callable[[list[T]], list[R | BaseException]],
               timeout: float | None = None) -> R:
        """Have `item` processed in some batch; return its result or raise its error.

        `process` gets the batch's items and returns one result (or exception) per item; if it
        raises, every item of the batch gets that error. With `timeout`, a caller still waiting
        for another thread's batch after that many seconds gives up with `BatchTimeout`: taken
        out of the queue if no batch holds it yet (else its batch may still process it), and
        handing the lead on if it had just been given it. A thread leading a batch runs it to
        its end: only waits for others' batches time out.
        """
        pending: _Pending[T] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while not lead:
            if deadline is None:
                pending.done.acquire()
            elif not pending.done.acquire(timeout=max(0.0, deadline - time.monotonic())) and self._give_up(pending):
                raise BatchTimeout(f"not processed within {timeout} s")
            if not pending.lead:
                break
            pending.lead = False
            lead = True
        if lead:
            self._lead(process)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _give_up(self, pending: _Pending[T]) -> bool:
        """A waiter's timeout ran out: withdraw it; False if its result came in the meantime."""
        with self._lock:
            if pending.finished:
                return False
            if pending.lead:  # made the next leader just now: hand that on, as `_lead` would
                pending.lead = False
                self._queue.remove(pending)
                self._pass_the_lead()
            elif pending in self._queue:
                self._queue.remove(pending)
            return True

    def _pass_the_lead(self) -> None:
        """Wake the oldest waiter to lead the next batch, or mark that nobody leads (holding `_lock`)."""
        if self._queue:
            successor = self._queue[0]
            successor.lead = True
            successor.done.release()
        else:
            self._leading = False

    def _lead(self, process: Callable[[list[T]], list[R | BaseException]]) -> None:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        try:
            results = process([p.item for p in batch])
            for pending, result in zip(batch, results):
                if isinstance(result, BaseException):
                    pending.error = result
                else:
                    pending.result = result
            self.batches += 1
            self.items += len(batch)
        except BaseException as exc:
            for pending in batch:
                pending.error = exc
        finally:
            with self._lock:
                self._pass_the_lead()
            for pending in batch:
                pending.finished = True
                pending.done.release()
