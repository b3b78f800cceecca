"""Group commit: callbacks arriving together are stored in one transaction, each answered after it.

Threads of one process hand their validated callback to a `GroupCommitter`. Whichever thread
finds no batch in progress leads: it takes everything queued (its own callback included),
records it with one `record_many` on its own session, and wakes the others with their result.
A callback is acknowledged only after the transaction holding it committed. When a batch fails,
its callbacks are retried one by one, so one bad callback cannot fail its neighbours; a database
outage fails them all, and each thread spools its own.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy.orm import Session

from receiver.callbacks.service import Accepted, RecordResult, record_many


@dataclass
class _Pending:
    item: Accepted
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next batch rather than with a result
    result: RecordResult | None = None
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, *, max_batch: int = 256, is_outage: Callable[[BaseException], bool] = lambda exc: False) -> None:
        self.max_batch = max_batch
        self._is_outage = is_outage
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._leading = False
        self.batches = 0  # for tests and metrics: how many transactions served how many callbacks
        self.recorded = 0

    def record(self, item: Accepted, session_factory: Callable[[], Session]) -> RecordResult:
        """Record `item` (in some batch) and return its result once committed; raise its error."""
        pending = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            if self._leading:
                lead = False
            else:
                self._leading = lead = True
        while not lead:
            pending.done.wait()
            if not pending.lead:
                break
            pending.lead, pending.done = False, threading.Event()
            lead = True
        if lead:
            self._lead(session_factory)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _lead(self, session_factory: Callable[[], Session]) -> None:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        try:
            self._commit(batch, session_factory)
        finally:
            with self._lock:
                if self._queue:
                    # Hand over: the oldest waiter leads the next batch; we answer our own request.
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leading = False
            for pending in batch:
                pending.done.set()

    def _commit(self, batch: list[_Pending], session_factory: Callable[[], Session]) -> None:
        try:
            session = session_factory()
        except BaseException as exc:
            for pending in batch:
                pending.error = exc
            return
        try:
            try:
                results = record_many(session, [p.item for p in batch])
            except BaseException as exc:
                session.rollback()
                if self._is_outage(exc) or len(batch) == 1:
                    for pending in batch:
                        pending.error = exc
                    return
                results = None
            if results is not None:
                for pending, result in zip(batch, results):
                    pending.result = result
                self.batches += 1
                self.recorded += len(batch)
                return
            for pending in batch:  # isolate the one that broke the batch
                try:
                    pending.result = record_many(session, [pending.item])[0]
                except BaseException as exc:
                    session.rollback()
                    pending.error = exc
        finally:
            session.close()
