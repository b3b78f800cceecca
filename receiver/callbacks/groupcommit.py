"""Group commit: callbacks arriving together are stored in one transaction, each answered after it.

Built on `LeaderBatcher`: the leading request thread stores the whole batch with one
`store_many` in a transaction of its own. When a batch fails, its callbacks are retried one by
one, so one bad callback cannot fail its neighbours; a database outage fails them all, and each
request thread spools its own callback.
"""

from __future__ import annotations

import logging
from typing import Callable, ContextManager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from receiver.batching import LeaderBatcher
from receiver.callbacks.service import Accepted, RecordResult, store_many

log = logging.getLogger(__name__)

# Opens a transaction: yields its connection, commits when the block ends, rolls back on an
# error (`Database.batch_transaction`).
Transaction = Callable[[], ContextManager[Connection]]


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

    def record(self, item: Accepted, transaction: Transaction) -> RecordResult:
        """Record `item` (in some batch) and return its result once committed; raise its error."""
        return self._batcher.submit(item, lambda batch: self._commit(batch, transaction))

    def _commit(self, batch: list[Accepted], transaction: Transaction) -> list:
        try:
            return self._record(batch, transaction)
        except BaseException as exc:
            if self._is_outage(exc) or len(batch) == 1:
                raise
        out: list = []
        for item in batch:  # isolate the one that broke the batch
            try:
                with transaction() as conn:
                    result = store_many(conn, [item])[0]
            except BaseException as exc:  # noqa: BLE001 - handed to that item's caller
                out.append(exc)
            else:  # only once its transaction has committed
                out.append(result)
        return out

    @staticmethod
    def _record(batch: list[Accepted], transaction: Transaction) -> list:
        """`store_many` once more on a new connection if the first one had been closed by the server.

        The committer's pool does not ping connections before use (see `Database`). A connection
        dropped since its last batch (a database restart, a proxy's idle timeout) fails at its
        first statement, and SQLAlchemy then discards the pool's other connections of that age
        too. Had it been lost during COMMIT instead, the second run finds the callbacks stored
        and answers them as redeliveries (each counted once too often as a duplicate): a
        callback is still never stored twice.
        """
        try:
            with transaction() as conn:
                return store_many(conn, batch)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("group commit: the server had closed the connection; batch run again on a new one",
                        extra={"error": type(exc.orig).__name__, "callbacks": len(batch)})
        with transaction() as conn:
            return store_many(conn, batch)
