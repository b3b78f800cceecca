"""Database outages on the callback path: recognise them, stop waiting on them, drain the spool after."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from sqlalchemy import exc as sa_exc, text

from receiver.callbacks.service import handle_body, quarantine, unrecordable_reason
from receiver.callbacks.spool import Spool, SpooledRequest
from receiver.db import Database, sqlite_busy_timeout

log = logging.getLogger(__name__)

# What an unreachable or locked database raises (connection refused, dropped, pool exhausted,
# SQLite "database is locked" after the busy timeout).
DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


class OutageBreaker:
    """After a database failure, send callbacks straight to the spool for a short while.

    Without it every callback during an outage would first wait for a connection attempt to
    fail; IM allows 2 s for the whole answer.
    """

    def __init__(self, cool_off: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cool_off = cool_off
        self._clock = clock
        self._open_until = 0.0

    def trip(self) -> None:
        self._open_until = self._clock() + self.cool_off

    def is_open(self) -> bool:
        return self._clock() < self._open_until


class _NotWritable(Exception):
    """A spooled request could be neither recorded nor quarantined: keep it for a later pass."""


_RETRY_LATER = (*DATABASE_DOWN, _NotWritable)


class SpoolDrainer:
    """A background thread that empties the spool into the database whenever it can."""

    def __init__(self, spool: Spool, database: Database, *, on_drained: Callable[[int], None] = lambda n: None,
                 interval: float = 1.0) -> None:
        self.spool = spool
        self.database = database
        self.on_drained = on_drained
        self.interval = interval
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _handle(self, item: SpooledRequest) -> None:
        """Store one spooled request as the endpoint would have: recorded, or else quarantined.

        If even the quarantine fails, the database takes no writes yet: `_NotWritable` keeps the
        line (and the rest) in the spool for a later pass.
        """
        try:
            with self.database.session_scope() as session:
                handle_body(session, raw_body=item.raw_body, meta=item.meta, now=item.received_at)
        except DATABASE_DOWN:
            raise
        except Exception as exc:
            log.exception("spooled callback could not be recorded; quarantining it")
            reason = unrecordable_reason(exc)
            try:
                with self.database.session_scope() as session:
                    quarantine(session, reason=reason, raw_body=item.raw_body, meta=item.meta, now=item.received_at)
            except Exception as second:
                raise _NotWritable(type(second).__name__) from second

    def drain_once(self) -> int:
        """Drain what can be drained now; 0 if the database is still down."""
        try:
            with sqlite_busy_timeout(1000), self.database.session_scope() as session:
                session.execute(text("SELECT 1"))
        except DATABASE_DOWN:
            return 0
        try:
            drained = self.spool.drain(self._handle, retry_later=lambda exc: isinstance(exc, _RETRY_LATER))
        except _RETRY_LATER:
            return 0
        if drained:
            log.info("drained spooled callbacks", extra={"count": drained})
            self.on_drained(drained)
        return drained

    def wake(self) -> None:
        """Make sure the thread runs; it keeps trying until the spool is empty."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="spool-drainer", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self.spool.segments():
                continue
            try:
                self.drain_once()
            except Exception:
                log.exception("spool drain failed; will retry")
