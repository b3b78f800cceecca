"""Group commit: callbacks arriving together are stored together, each answered after its commit.

Built on `LeaderBatcher`: the leading request thread stores the whole batch for everyone. On
PostgreSQL it may first store, in one autocommitted statement (`store_unmatched`), the callbacks
that no dismissal of ours awaits; whatever is left (redeliveries, and callbacks a dismissal of
ours may await) goes through `store_many` in a transaction of its own. When that transaction
fails, its callbacks are retried one by one, so one bad callback cannot fail its neighbours; a
database outage fails the callbacks not yet stored, and each of their request threads spools
its own callback.

Whether the statement is worth trying depends on the app: it saves a batch three of its four
round trips when it stores the whole batch, and costs one more when it leaves anything for the
transaction. An app whose callbacks mostly confirm our own dismissals would pay that round trip
on nearly every batch, so the committer follows how often recent batches were stored whole
(`StatementPath`) and goes straight to the transaction while that is rare.
"""

from __future__ import annotations

import logging
from typing import Callable, ContextManager, Sequence

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from receiver.batching import LeaderBatcher
from receiver.callbacks.service import Accepted, RecordResult, store_many, store_unmatched

log = logging.getLogger(__name__)

# Opens a connection (`Database.batch_transaction`: in a transaction, committed when the block
# ends and rolled back on an error; `Database.batch_statement`: in autocommit).
Opener = Callable[[], ContextManager[Connection]]


class StatementPath:
    """When the one-statement path is worth a batch's round trip: a running share of the batches
    it stored whole.

    Trying it costs one round trip and saves three when it stores the batch whole (four against
    the transaction's four otherwise), so it pays while more than a quarter of batches are stored
    whole. The share is an average over about the last ten tries, kept above `floor`; below
    `worth`, one batch in `probe_every` still tries it, and one such probe stored whole lifts the
    share back above `worth`, so a change in the traffic is noticed within `probe_every` batches.
    Used by one leader at a time (the batcher's), so it needs no lock.
    """

    def __init__(self, *, worth: float = 0.25, probe_every: int = 16, weight: float = 0.1,
                 floor: float = 0.2) -> None:
        if floor + weight * (1 - floor) <= worth:
            raise ValueError("one probe stored whole must lift the share above `worth`")
        self.worth = worth
        self.probe_every = probe_every
        self.weight = weight
        self.floor = floor
        self.whole_share = 1.0  # optimistic at start: the first batches try it
        self._skipped = 0
        self.tried = 0
        self.skipped = 0

    def should_try(self) -> bool:
        if self.whole_share > self.worth or self._skipped + 1 >= self.probe_every:
            self._skipped = 0
            self.tried += 1
            return True
        self._skipped += 1
        self.skipped += 1
        return False

    def tried_with(self, whole: bool) -> None:
        self.whole_share = max(self.floor, self.whole_share + self.weight * (float(whole) - self.whole_share))


class GroupCommitter:
    def __init__(self, *, max_batch: int = 256, is_outage: Callable[[BaseException], bool] = lambda exc: False,
                 statement_path: StatementPath | None = None) -> None:
        self._batcher: LeaderBatcher[Accepted, RecordResult] = LeaderBatcher(max_batch)
        self._is_outage = is_outage
        self.statement_path = statement_path or StatementPath()

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def recorded(self) -> int:
        return self._batcher.items

    def record(self, item: Accepted, transaction: Opener, statement: Opener | None = None,
               timeout: float | None = None) -> RecordResult:
        """Record `item` (in some batch) and return its result once committed; raise its error.

        `statement`, where the database has it (`Database.has_batch_statements`), opens the
        autocommit connection of the one-statement path. `timeout`: `BatchTimeout` if another
        caller's batch, the one to hold `item`, has not committed by then (a database that
        stopped answering mid-statement holds it; the caller spools `item`).
        """
        return self._batcher.submit(item, lambda batch: self._commit(batch, transaction, statement), timeout)

    def _commit(self, batch: list[Accepted], transaction: Opener, statement: Opener | None = None) -> list:
        results: list = [None] * len(batch)
        if statement is not None and self.statement_path.should_try():
            try:
                results = self._run(statement, store_unmatched, batch)
            except Exception as exc:
                if self._is_outage(exc):
                    raise
                # The transaction path takes them all. Failed before its statement committed,
                # it stored nothing; after (a bug of ours), the transaction path finds its
                # callbacks stored and answers them as redeliveries: never stored twice.
                log.warning("group commit: the one-statement path failed; the batch goes through a transaction",
                            extra={"error": type(exc).__name__, "callbacks": len(batch)})
            self.statement_path.tried_with(all(result is not None for result in results))
        rest = [i for i, result in enumerate(results) if result is None]
        if rest:
            for i, result in zip(rest, self._in_transactions([batch[i] for i in rest], transaction)):
                results[i] = result
        return results

    def _in_transactions(self, batch: list[Accepted], transaction: Opener) -> list:
        """`store_many` for `batch` in one transaction; one by one if that fails (not for an outage)."""
        try:
            return self._run(transaction, store_many, batch)
        except Exception as exc:
            if self._is_outage(exc) or len(batch) == 1:
                return [exc] * len(batch)
        out: list = []
        for item in batch:  # isolate the one that broke the batch
            try:
                with transaction() as conn:
                    result = store_many(conn, [item])[0]
            except Exception as exc:  # noqa: BLE001 - handed to that item's caller
                out.append(exc)
            else:  # only once its transaction has committed
                out.append(result)
        return out

    @staticmethod
    def _run(open_connection: Opener, store: Callable[[Connection, Sequence[Accepted]], list],
             batch: list[Accepted]) -> list:
        """`store` once more if the server closed the connection or rolled the transaction back.

        The committer's pool does not ping connections before use (see `Database`). A connection
        dropped since its last batch (a database restart, a proxy's idle timeout) fails at its
        first statement, and SQLAlchemy then discards the pool's other connections of that age
        too. Had it been lost during the commit instead, the second run finds the callbacks
        stored and answers them as redeliveries (each counted once too often as a duplicate): a
        callback is still never stored twice. A transaction the server rolled back (a deadlock,
        a serialization failure: SQLSTATE class 40) stored nothing and is simply run again,
        rather than sending the batch to the spool as if the database were down.
        """
        try:
            with open_connection() as conn:
                return store(conn, batch)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                why = "the server had closed the connection; batch run again on a new one"
            elif (getattr(exc.orig, "sqlstate", None) or "").startswith("40"):
                why = "the server rolled the transaction back; batch run again"
            else:
                raise
            log.warning(f"group commit: {why}", extra={"error": type(exc.orig).__name__, "callbacks": len(batch)})
        with open_connection() as conn:
            return store(conn, batch)
