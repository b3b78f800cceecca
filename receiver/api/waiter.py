"""Long-polling without holding a connection: one thread per process polls for all awaited dismissals."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from sqlalchemy.orm import Session

from receiver import queries
from receiver.models import Dismissal

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 0.2


class WaiterHub:
    """Wakes request threads waiting for dismissals to reach a final state.

    Waiters hold no database connection: every `POLL_INTERVAL_SECONDS`, while anyone waits, the
    hub's thread asks in one query which awaited dismissals are final (a short-lived session
    each time) and sets their waiters' events. With nobody waiting the thread sleeps on a
    condition, so an idle process does no work.
    """

    def __init__(self, session_factory: Callable[[], Session], *, interval: float = POLL_INTERVAL_SECONDS) -> None:
        self._session_factory = session_factory
        self._interval = interval
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._waiters: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def wait(self, dismissal_id: str, timeout: float) -> bool:
        """Block until the dismissal is final (True) or `timeout` seconds pass (False)."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(dismissal_id, set()).add(event)
            if self._thread is None or not self._thread.is_alive():
                # Started lazily, so a forking server (gunicorn --preload) starts one per worker.
                self._thread = threading.Thread(target=self._run, name="dismissal-waiter-hub", daemon=True)
                self._thread.start()
            self._wakeup.notify()
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                waiting = self._waiters.get(dismissal_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[dismissal_id]

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._waiters.values())

    def stop(self) -> None:
        """End the polling thread (tests; a web process just exits)."""
        self._stopping.set()
        with self._lock:
            self._wakeup.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while not self._waiters and not self._stopping.is_set():
                    self._wakeup.wait()
                ids = list(self._waiters)
            if self._stopping.is_set():
                return
            try:
                session = self._session_factory()
                try:
                    done = queries.final_dismissal_ids(session=session, ids=ids)
                finally:
                    session.close()
            except Exception:  # the database may be briefly unreachable: waiters just time out
                log.exception("waiter hub poll failed")
                done = set()
            with self._lock:
                for dismissal_id in done:
                    for event in self._waiters.get(dismissal_id, ()):
                        event.set()
            self._stopping.wait(self._interval)


def await_dismissal(*, session: Session, hub: WaiterHub, dismissal_id: str, wait: float) -> Dismissal | None:
    """The dismissal, after waiting up to `wait` seconds for a final state; None if unknown."""
    dismissal = queries.get_dismissal(session=session, dismissal_id=dismissal_id)
    if dismissal is None or dismissal.is_final or wait <= 0:
        return dismissal
    # Hand the connection back to the pool for the wait; the session reconnects to re-read.
    session.close()
    hub.wait(dismissal_id, wait)
    return queries.get_dismissal(session=session, dismissal_id=dismissal_id)
