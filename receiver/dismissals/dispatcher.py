"""The dispatcher: claim queued dismissals, call `destroy_group` under the rate limit, record answers."""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import Connection, and_, insert, or_, select, text, update

from receiver.batching import LeaderBatcher
from receiver.callbacks.outage import DATABASE_DOWN
from receiver.db import Database
from receiver.dismissals.states import ALLOWED_FROM, Event, transition
from receiver.im.errors import CODE_NETWORK, ErrorKind, IMError
from receiver.im.ratelimit import RateLimiterUnavailable
from receiver.models import WAITING_TO_BE_SENT, Dismissal, DismissalAttempt, Status, utcnow
from receiver.textsafety import storable

log = logging.getLogger(__name__)

_CLEAR_LEASE = dict(lease_owner=None, lease_expires_at=None)
# A claim older than this when its turn comes is checked (still ours?) and its lease renewed
# before the call. At 200 calls/s the 2 × concurrency claims held leave within about 0.3 s;
# with a low rate, or several workers sharing one through Redis, they may wait longer.
RECHECK_AFTER = 1.0
# Seconds before a row handed back because the rate-limit store was unreachable is due again.
LIMITER_DOWN_RETRY = 5.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter for retryable IM errors."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempts: int, hint: float | None = None, rng: random.Random = random.Random()) -> float:
        if hint is not None:
            return hint
        ceiling = min(self.cap, self.base * (2 ** max(attempts - 1, 0)))
        return ceiling * rng.uniform(0.5, 1.0)


class _NotOurs(Exception):
    """The claimed row was retaken or settled before its call could leave: nothing is sent."""


@dataclass(frozen=True)
class _Answer:
    """IM's answer to one destroy_group call, waiting to be recorded."""

    claim: "Claim"
    attempts: int
    started: datetime
    error: IMError | None
    http_status: int | None
    code: int
    info: str
    duration: float
    lease_until: float = float("inf")  # time.monotonic() when the row's lease runs out


@dataclass(frozen=True)
class Claim:
    id: str
    group_id: str
    attempts: int  # counting the call this claim is for
    claimed_at: float = 0.0  # time.monotonic() of the claim (or of its last renewal)


class Dispatcher:
    """Send claimed dismissals to IM with up to `concurrency` calls in flight."""

    def __init__(self, database: Database, client, *, worker_id: str, concurrency: int = 32,
                 lease_seconds: float = 60.0, max_attempts: int = 8, confirm_timeout: float = 120.0,
                 backoff: Backoff = Backoff(), clock: Callable[[], datetime] = utcnow,
                 on_transition: Callable[[str], None] | None = None) -> None:
        self.database = database
        self.client = client
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.confirm_timeout = timedelta(seconds=confirm_timeout)
        self.backoff = backoff
        self._clock = clock
        self._on_transition = on_transition or (lambda event: None)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dispatch")
        self._answers: LeaderBatcher[_Answer, None] = LeaderBatcher(max_batch=4 * concurrency)
        self._inflight: set[Future] = set()
        self._lock = threading.Lock()
        self._claimed: set[str] = set()  # ids this process holds, never claimed again meanwhile
        self.stopping = threading.Event()

    # -- claiming ---------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Claim]:
        """Take up to `limit` due rows: rows left `sending` whose lease ran out (a worker died with
        them) first, then queued and retrying rows whose time has come, oldest first."""
        if limit <= 0:
            return []
        now = self._clock()
        c = Dismissal.__table__.c
        expired = and_(c.status == Status.SENDING.value, c.lease_expires_at < now)
        waiting = and_(text(WAITING_TO_BE_SENT), c.next_attempt_at <= now)
        due = or_(waiting, expired)
        with self.database.engine.begin() as conn:
            with self._lock:
                mine = list(self._claimed)
            # Two reads, each in the order of an index and each stopping after the rows it takes
            # (PostgreSQL: concurrent workers skip each other's rows; SQLite ignores SKIP LOCKED and
            # serialises claimers through BEGIN IMMEDIATE instead). One query with an OR of both
            # could use no index's order: it read and sorted every due row, every claim.
            ids = conn.execute(
                select(c.id).where(expired, c.id.not_in(mine))
                .order_by(c.lease_expires_at, c.id).limit(limit).with_for_update(skip_locked=True)
            ).scalars().all()
            if len(ids) < limit:
                ids += conn.execute(
                    select(c.id).where(waiting, c.id.not_in(mine))
                    .order_by(c.next_attempt_at, c.id).limit(limit - len(ids)).with_for_update(skip_locked=True)
                ).scalars().all()
            if not ids:
                return []
            # The same condition again in the UPDATE: the claim is one conditional write. It also
            # counts the attempt, before the call: if we die after claiming, the attempt still
            # counts (at worst one too many, for a call never made); a clean stop hands unsent
            # claims back and takes the count back too (RELEASE).
            rows = conn.execute(
                update(Dismissal.__table__)
                .where(c.id.in_(ids), due, c.status.in_([st.value for st in ALLOWED_FROM[Event.CLAIM]]))
                .values(status=Status.SENDING.value, lease_owner=self.worker_id, lease_expires_at=now + self.lease,
                        attempts=c.attempts + 1, updated_at=now)
                .returning(c.id, c.group_id, c.attempts)
            ).all()
        claimed_at = time.monotonic()
        claims = sorted((Claim(r.id, r.group_id, r.attempts, claimed_at) for r in rows), key=lambda cl: ids.index(cl.id))
        with self._lock:
            self._claimed.update(cl.id for cl in claims)
        for _ in claims:
            self._on_transition(Event.CLAIM.value)
        return claims

    # -- the loop ---------------------------------------------------------------------------------

    def pump(self) -> int:
        """Claim as many rows as there is room for in flight and start sending them; return how many.

        Up to 2 × concurrency rows are held; once some are in flight, the rest is refilled only
        when half of that room is free, so a claim (one transaction) takes many rows rather than
        one per finished call.
        """
        with self._lock:
            self._inflight = {f for f in self._inflight if not f.done()}
            busy = len(self._inflight)
        room = 2 * self.concurrency - busy
        if self.stopping.is_set() or (busy and room < self.concurrency):
            return 0
        claims = self.claim(room)
        for claim in claims:
            future = self._pool.submit(self._send, claim)
            with self._lock:
                self._inflight.add(future)
        return len(claims)

    def inflight(self) -> int:
        with self._lock:
            return sum(1 for f in self._inflight if not f.done())

    def drain(self, timeout: float | None = None) -> None:
        """Wait for calls in flight (rows not yet sent are handed back when stopping)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.inflight():
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.01)

    def close(self) -> None:
        self.stopping.set()
        self.drain(timeout=30)
        self._pool.shutdown(wait=True)

    def run_until_idle(self, timeout: float = 30.0) -> None:
        """Send everything that is due now, then return (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pump() == 0 and self.inflight() == 0:
                return
            time.sleep(0.005)

    # -- one send ---------------------------------------------------------------------------------

    def _send(self, claim: Claim) -> None:
        try:
            self._send_or_release(claim)
        finally:
            with self._lock:
                self._claimed.discard(claim.id)

    def _send_or_release(self, claim: Claim) -> None:
        try:
            if self.stopping.is_set():
                with self.database.session_scope() as session:
                    transition(session, claim.id, Event.RELEASE, owner=self.worker_id, attempts=claim.attempts - 1,
                               next_attempt_at=self._clock(), **_CLEAR_LEASE)
                return
            self._send_one(claim)
        except Exception:  # a bug or the database: the lease expires and the row is retaken
            log.exception("dispatch failed", extra={"dismissal_id": claim.id})

    def _send_one(self, claim: Claim) -> None:
        started = self._clock()
        leased_at = claim.claimed_at

        def still_ours() -> None:
            """Run by the client after the rate limiter's wait, just before the request leaves.

            In the common case no write before the call: the claim, moments ago (at most
            2 × concurrency calls ahead of the pacer, under RECHECK_AFTER), counted the attempt and
            leased the row for the call and for recording its answer. A row sent before (retaken
            from a dead worker, or a retry) may have been confirmed by a late callback since, and
            an older claim needs its lease renewed: checked and renewed here, after the wait,
            which with a low shared rate can outlast the lease (and another worker may have
            retaken the row meanwhile). What remains is the window between this check and the
            call: a callback landing in it means IM answers 10010, recorded as a late answer.
            """
            nonlocal leased_at
            if claim.attempts > 1 or time.monotonic() - leased_at > RECHECK_AFTER:
                leased_at = time.monotonic()
                if not self._renew(claim, self._clock()):
                    raise _NotOurs

        attempts = claim.attempts
        error: IMError | None = None
        try:
            call = self.client.destroy_group(claim.group_id, before_send=still_ours)
            http_status, code, info, duration = call.http_status, 0, call.error_info, call.duration
        except _NotOurs:
            log.info("claim no longer ours; not sending", extra={"dismissal_id": claim.id})
            return
        except IMError as exc:
            error = exc
            http_status, code, info, duration = exc.http_status, exc.code, exc.info, exc.duration
        except RateLimiterUnavailable:
            # Nothing was sent (the shared limit's store is down): the row goes back uncounted,
            # due again shortly, and no attempt is recorded for a call never made.
            log.warning("rate-limit store unreachable; dismissal handed back unsent", extra={"dismissal_id": claim.id})
            with self.database.engine.begin() as conn:
                transition(conn, claim.id, Event.RELEASE, owner=self.worker_id, attempts=claim.attempts - 1,
                           next_attempt_at=self._clock() + timedelta(seconds=LIMITER_DOWN_RETRY), **_CLEAR_LEASE)
            return
        except Exception as exc:  # transport bugs surface as retryable, never lost
            error = IMError("destroy_group", CODE_NETWORK, f"{type(exc).__name__}: {exc}")
            http_status, code, info, duration = None, CODE_NETWORK, error.info, 0.0
        # IM has answered: hold on to the answer until the database takes it (it may be down for
        # a while). Giving up only costs a second call once the lease expires.
        answer = _Answer(claim, attempts, started, error, http_status, code, info, duration,
                         lease_until=leased_at + self.lease.total_seconds())
        # Senders that finish together share one transaction; each returns once its answer is in.
        self._answers.submit(answer, self._record_batch)

    def _renew(self, claim: Claim, now: datetime) -> bool:
        """Renew the lease of a claim that waited long for its turn (a low rate limit); False if it is gone."""
        c = Dismissal.__table__.c
        with self.database.engine.begin() as conn:
            return bool(conn.execute(
                update(Dismissal.__table__)
                .where(c.id == claim.id, c.lease_owner == self.worker_id, c.status == Status.SENDING.value,
                       c.lease_expires_at > now)
                .values(lease_expires_at=now + self.lease)
            ).rowcount)

    def _record_batch(self, answers: list[_Answer]) -> list[None]:
        """Write IM's answers in one transaction; retry while the database is unreachable.

        Any other failure is retried answer by answer, so one answer the database refuses
        cannot cost the others their record (and a second destroy_group after the lease).
        """
        # Until the first of these rows' leases runs out; after that a row may be retaken and sent
        # again by another worker, and the answer held here would be recorded late (or not at all).
        deadline = min(a.lease_until for a in answers) - 1.0
        while True:
            try:
                recorded = self._write(answers)
                break
            except DATABASE_DOWN:
                if time.monotonic() > deadline:
                    raise
                log.warning("database unreachable; holding IM's answers", extra={"count": len(answers)})
                time.sleep(0.5)
            except Exception:
                if len(answers) == 1:
                    raise
                recorded = []
                for answer in answers:
                    try:
                        recorded += self._write([answer])
                    except Exception:
                        log.exception("could not record IM's answer", extra={"dismissal_id": answer.claim.id})
                        recorded.append((None, False, {"outcome": "unrecorded"}))
                break
        for answer, (event, moved, row) in zip(answers, recorded):
            if moved and event is not None:
                self._on_transition(event.value)
            log.log(logging.DEBUG if row["outcome"] == "sent" else logging.INFO, "destroy_group answered", extra={
                "dismissal_id": answer.claim.id, "group_id": answer.claim.group_id, "error_code": answer.code,
                "outcome": row["outcome"], "attempt": answer.attempts,
            })
        return [None] * len(answers)

    def _write(self, answers: list[_Answer]) -> list[tuple[Event, bool, dict]]:
        # Rows are updated in ascending id order, like every multi-row writer (see matching), so
        # this transaction and a batch of callbacks never deadlock.
        order = sorted(range(len(answers)), key=lambda i: answers[i].claim.id)
        recorded: list = [None] * len(answers)
        with self.database.engine.begin() as conn:
            for i in order:
                recorded[i] = self._record(conn, answers[i])
            conn.execute(insert(DismissalAttempt.__table__), [row for _, _, row in recorded])
        return recorded

    def _record(self, conn: Connection, a: _Answer) -> tuple[Event, bool, dict]:
        """Move one dismissal by IM's answer (if it is still ours) and build its attempt row."""
        claim, attempts, started, error, code = a.claim, a.attempts, a.started, a.error, a.code
        info = storable(a.info)
        now = self._clock()
        mine = self.worker_id
        if error is None:
            event, outcome = Event.SENT, "sent"
            moved = transition(conn, claim.id, Event.SENT, owner=mine, sent_at=started, last_error_code=None,
                               last_error_info=None, next_attempt_at=now + self.confirm_timeout, **_CLEAR_LEASE)
        elif error.kind is ErrorKind.GONE:
            event, outcome = Event.ALREADY_GONE, "already_gone"
            moved = transition(conn, claim.id, Event.ALREADY_GONE, owner=mine, sent_at=started, confirmed_at=now,
                               last_error_code=code, last_error_info=info, next_attempt_at=None, **_CLEAR_LEASE)
        elif error.kind in (ErrorKind.RETRYABLE, ErrorKind.RESIGN) and attempts < self.max_attempts:
            event, outcome = Event.RETRY, "retry"
            delay = self.backoff.delay(attempts, error.retry_after)
            moved = transition(conn, claim.id, Event.RETRY, owner=mine, sent_at=started, last_error_code=code,
                               last_error_info=info, next_attempt_at=now + timedelta(seconds=delay), **_CLEAR_LEASE)
        elif error.kind in (ErrorKind.RETRYABLE, ErrorKind.RESIGN):
            # Out of attempts, but IM never refused: probed at once rather than called `failed`.
            event, outcome = Event.EXHAUSTED, "exhausted"
            moved = transition(conn, claim.id, Event.EXHAUSTED, owner=mine, sent_at=started, last_error_code=code,
                               last_error_info=info, next_attempt_at=now, **_CLEAR_LEASE)
        else:
            event, outcome = Event.FAIL, "failed"
            moved = transition(conn, claim.id, Event.FAIL, owner=mine, sent_at=started, last_error_code=code,
                               last_error_info=info, next_attempt_at=None, **_CLEAR_LEASE)
        row = dict(dismissal_id=claim.id, api="destroy_group", started_at=started,
                   duration_ms=int(a.duration * 1000), http_status=a.http_status, error_code=code,
                   error_info=storable((info or "")[:2000]), outcome=outcome if moved else f"{outcome}_late")
        return event, moved, row
