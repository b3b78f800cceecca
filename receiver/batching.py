"""Leader/follower batching: threads that arrive together share one piece of work (a transaction).

Each thread submits its item. Whichever finds no batch in progress leads: it takes everything
queued (its own item included), runs `process` once for all of them, and wakes the others with
their own result. If more arrived meanwhile, the oldest waiter leads the next batch, so no thread
works for others for long. No extra thread, and nothing is acknowledged before `process` returns.
"""

from __future__ import annotations

import threading
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

    __slots__ = ("item", "done", "lead", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()
        self.lead = False  # woken to lead the next batch rather than with a result
        self.result: object = None
        self.error: BaseException | None = None


class LeaderBatcher(Generic[T, R]):
    def __init__(self, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Pending[T]] = deque()
        self._leading = False
        self.batches = 0
        self.items = 0

    def submit(self, item: T, process: Callable[[list[T]], list[R | BaseException]]) -> R:
        """Have `item` processed in some batch; return its result or raise its error.

        `process` gets the batch's items and returns one result (or exception) per item; if it
        raises, every item of the batch gets that error.
        """
        pending: _Pending[T] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        while not lead:
            pending.done.acquire()
            if not pending.lead:
                break
            pending.lead = False
            lead = True
        if lead:
            self._lead(process)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

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
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.release()
                else:
                    self._leading = False
            for pending in batch:
                pending.done.release()
