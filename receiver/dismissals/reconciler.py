"""The reconciler: probe groups whose confirming callback never came, and settle their dismissals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import select

from receiver.db import Database
from receiver.dismissals.states import Event, transition
from receiver.im.client import MAX_GROUPS_PER_INFO_CALL
from receiver.im.errors import IMError
from receiver.models import Dismissal, DismissalAttempt, Status, utcnow
from receiver.textsafety import storable

log = logging.getLogger(__name__)

MAX_REDISPATCHES = 1
MAX_PROBE_ERRORS = 5


@dataclass
class ReconcileReport:
    probed: int = 0
    confirmed: int = 0
    redispatched: int = 0
    unconfirmed: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Reconciler:
    """Probe `awaiting_callback` dismissals past their deadline with get_group_info, 50 at a time."""

    def __init__(self, database: Database, client, *, confirm_timeout: float, clock: Callable[[], datetime] = utcnow,
                 on_probe: Callable[[str], None] | None = None, on_transition: Callable[[str], None] | None = None) -> None:
        self.database = database
        self.client = client
        self.confirm_timeout = timedelta(seconds=confirm_timeout)
        self._clock = clock
        self._on_probe = on_probe or (lambda outcome: None)
        self._on_transition = on_transition or (lambda event: None)

    def due(self, limit: int = MAX_GROUPS_PER_INFO_CALL) -> list[tuple[str, str, int, int]]:
        now = self._clock()
        with self.database.session_scope() as session:
            return [tuple(r) for r in session.execute(
                select(Dismissal.id, Dismissal.group_id, Dismissal.redispatches, Dismissal.probes)
                .where(Dismissal.status == Status.AWAITING_CALLBACK, Dismissal.next_attempt_at <= now)
                .order_by(Dismissal.next_attempt_at, Dismissal.id)
                .limit(limit)
            ).all()]

    def run_once(self, max_batches: int = 20, keep_going: Callable[[], bool] = lambda: True) -> ReconcileReport:
        """Probe up to `max_batches` batches of due dismissals (while `keep_going()`); return what happened."""
        report = ReconcileReport()
        for _ in range(max_batches):
            if not keep_going():
                break
            rows = self.due()
            if not rows:
                break
            self._probe_batch(rows, report)
        return report

    def _probe_batch(self, rows, report: ReconcileReport) -> None:
        group_ids = [r[1] for r in rows]
        started = self._clock()
        try:
            probes = self.client.get_group_info(group_ids)
            error = None
        except IMError as exc:
            probes, error = {}, exc
        now = self._clock()
        with self.database.session_scope() as session:
            # Ascending id order, like every multi-row writer (see matching): no deadlocks.
            for dismissal_id, group_id, redispatches, probe_count in sorted(rows):
                report.probed += 1
                probe = probes.get(group_id)
                if probe is not None and probe.gone:
                    outcome = "gone"
                    moved = transition(session, dismissal_id, Event.PROBE_GONE, due_by=now, confirmed_at=now,
                                       probes=probe_count + 1, next_attempt_at=None)
                    report.confirmed += moved
                    event = Event.PROBE_GONE
                elif probe is not None and probe.exists and redispatches < MAX_REDISPATCHES:
                    outcome = "exists"
                    moved = transition(session, dismissal_id, Event.REDISPATCH, due_by=now, probes=probe_count + 1,
                                       redispatches=redispatches + 1, next_attempt_at=now)
                    report.redispatched += moved
                    event = Event.REDISPATCH
                elif probe is not None and probe.exists:
                    outcome = "exists"
                    moved = transition(session, dismissal_id, Event.GIVE_UP, due_by=now, probes=probe_count + 1,
                                       next_attempt_at=None, last_error_code=None,
                                       last_error_info="group still exists after a re-sent destroy_group")
                    report.unconfirmed += moved
                    event = Event.GIVE_UP
                else:
                    outcome = "error"
                    code = error.code if error else (probe.error_code if probe else -3)
                    info = storable(error.info if error else (probe.error_info if probe else "no answer for this group"))
                    report.errors += 1
                    if probe_count + 1 >= MAX_PROBE_ERRORS:
                        moved = transition(session, dismissal_id, Event.GIVE_UP, due_by=now, probes=probe_count + 1,
                                           next_attempt_at=None, last_error_code=code, last_error_info=info)
                        report.unconfirmed += moved
                        event = Event.GIVE_UP
                    else:
                        # Keep waiting: a late callback may still come; probe again later.
                        session.execute(
                            Dismissal.__table__.update().where(Dismissal.id == dismissal_id,
                                                               Dismissal.status == Status.AWAITING_CALLBACK)
                            .values(probes=probe_count + 1, next_attempt_at=now + self.confirm_timeout / 2)
                        )
                        moved, event = False, None
                session.add(DismissalAttempt(
                    dismissal_id=dismissal_id, api="get_group_info", started_at=started,
                    duration_ms=int((now - started).total_seconds() * 1000), http_status=200 if error is None else error.http_status,
                    error_code=(probe.error_code if probe else (error.code if error else 0)),
                    error_info=storable((probe.error_info if probe else (error.info if error else ""))[:2000]),
                    outcome=f"probe_{outcome}",
                ))
                report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
                self._on_probe(outcome)
                if moved and event is not None:
                    self._on_transition(event.value)
        log.info("reconciler probed groups", extra={"probed": len(rows), "error": error.code if error else None})
