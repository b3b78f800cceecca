"""Group commit: callbacks arriving together are stored in one transaction, each answered after it.

Built on `LeaderBatcher`: the leading request thread records the whole batch with one
`record_many` on a session of its own. When a batch fails, its callbacks are retried one by one,
so one bad callback cannot fail its neighbours; a database outage fails them all, and each
request thread spools its own callback.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy.orm import Session

from receiver.batching import LeaderBatcher
from receiver.callbacks.service import Accepted, RecordResult, record_many


class GroupCommitter:
    def __init__(self, *, max_batch: int = 256, is_outage: Callable[[BaseException], bool] = lambda exc: False) -> None:
        self._batcher: LeaderBatcher[Accepted, RecordResult] = LeaderBatcher(max_batch)
        self._is_outage = is_outage

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def recorded(self) -> int:
        return self._batcher.items

    def record(self, item: Accepted, session_factory: Callable[[], Session]) -> RecordResult:
        """Record `item` (in some batch) and return its result once committed; raise its error."""
        return self._batcher.submit(item, lambda batch: self._commit(batch, session_factory))

    def _commit(self, batch: list[Accepted], session_factory: Callable[[], Session]) -> list:
        session = session_factory()
        try:
            try:
                return record_many(session, batch)
            except BaseException as exc:
                session.rollback()
                if self._is_outage(exc) or len(batch) == 1:
                    raise
            out: list = []
            for item in batch:  # isolate the one that broke the batch
                try:
                    out.append(record_many(session, [item])[0])
                except BaseException as exc:  # noqa: BLE001 - handed to that item's caller
                    session.rollback()
                    out.append(exc)
            return out
        finally:
            session.close()
