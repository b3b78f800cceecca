"""The dispatcher and reconciler against the fake IM client, on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from receiver.callbacks.service import RequestMeta, record_group_destroyed
from receiver.dismissals.dispatcher import Backoff, Dispatcher
from receiver.dismissals.reconciler import Reconciler
from receiver.dismissals.service import request_batch, request_dismissal
from receiver.im.errors import CODE_NETWORK, IMError
from receiver.im.fake import FakeIMClient
from receiver.im.ratelimit import RateLimiterUnavailable
from receiver.models import Confirmation, Dismissal, DismissalAttempt, Status, utcnow
from receiver.schemas.tencent import GroupDestroyedSchema
from tests.conftest import TEST_SDKAPPID
from tests.helpers import destroyed_body


class Clock:
    """Real time plus an offset that tests move forward."""

    def __init__(self):
        self.offset = timedelta(0)

    @property
    def now(self):
        return utcnow() + self.offset

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.offset += timedelta(seconds=seconds)


def deliver_callback(database, group_id, event_time_ms=None):
    body = destroyed_body(group_id, event_time=event_time_ms or int(utcnow().timestamp() * 1000))
    meta = RequestMeta("SdkAppid=x", TEST_SDKAPPID, body["CallbackCommand"], None, "RESTAPI", None, "application/json", None)
    with database.session_scope() as s:
        return record_group_destroyed(s, data=GroupDestroyedSchema().load(body), body=body, raw_body=b"{}", meta=meta)


def queue(database, *group_ids):
    with database.session_scope() as s:
        return [r.dismissal.id for r in request_batch(s, sdkappid=TEST_SDKAPPID, group_ids=list(group_ids))]


def get(database, dismissal_id) -> Dismissal:
    with database.session_scope() as s:
        return s.get(Dismissal, dismissal_id)


def attempts(database, dismissal_id):
    with database.session_scope() as s:
        return s.scalars(select(DismissalAttempt).where(DismissalAttempt.dismissal_id == dismissal_id)
                         .order_by(DismissalAttempt.id)).all()


@pytest.fixture
def fake():
    return FakeIMClient()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def dispatcher(committed_db, fake, clock):
    d = Dispatcher(committed_db, fake, worker_id="w1", concurrency=4, lease_seconds=30, max_attempts=3,
                   confirm_timeout=120, backoff=Backoff(base=1, cap=4), clock=clock)
    yield d
    d.close()


def test_sent_dismissal_waits_for_its_callback_then_confirms(committed_db, fake, dispatcher):
    fake.add_group("g1")
    [did] = queue(committed_db, "g1")
    dispatcher.run_until_idle()
    d = get(committed_db, did)
    assert (d.status, d.attempts, d.lease_owner) == (Status.AWAITING_CALLBACK, 1, None)
    assert d.sent_at is not None
    [a] = attempts(committed_db, did)
    assert (a.api, a.error_code, a.outcome, a.http_status) == ("destroy_group", 0, "sent", 200)
    assert deliver_callback(committed_db, "g1").matched_request
    d = get(committed_db, did)
    assert (d.status, d.confirmation) == (Status.CONFIRMED, Confirmation.CALLBACK)


def test_group_already_gone_is_confirmed_as_such(committed_db, dispatcher):
    [did] = queue(committed_db, "never-existed")
    dispatcher.run_until_idle()
    d = get(committed_db, did)
    assert (d.status, d.confirmation, d.last_error_code) == (Status.CONFIRMED, Confirmation.ALREADY_GONE, 10010)


def test_retryable_error_backs_off_then_succeeds(committed_db, fake, dispatcher, clock):
    fake.add_group("g2")
    fake.fail_next("g2", 10002)
    [did] = queue(committed_db, "g2")
    dispatcher.run_until_idle()
    d = get(committed_db, did)
    assert (d.status, d.last_error_code) == (Status.RETRYING, 10002)
    assert d.next_attempt_at > clock.now
    dispatcher.run_until_idle()  # not due yet: nothing happens
    assert get(committed_db, did).attempts == 1
    clock.advance(5)
    dispatcher.run_until_idle()
    d = get(committed_db, did)
    assert (d.status, d.attempts, d.last_error_code) == (Status.AWAITING_CALLBACK, 2, None)
    assert [a.error_code for a in attempts(committed_db, did)] == [10002, 0]


def answered(committed_db, fake, dispatcher, group_id, code, times=1, clock=None) -> str:
    """Queue a dismissal of an existing group whose next `times` calls IM answers with `code`; send them all."""
    fake.add_group(group_id)
    fake.fail_next(group_id, code, times=times)
    [did] = queue(committed_db, group_id)
    for _ in range(times):
        dispatcher.run_until_idle()
        if clock is not None:
            clock.advance(10)  # past each retry's backoff
    return did


def test_terminal_error_fails_with_last_error(committed_db, fake, dispatcher):
    did = answered(committed_db, fake, dispatcher, "g3", 10007)
    d = get(committed_db, did)
    assert (d.status, d.last_error_code, d.confirmation) == (Status.FAILED, 10007, None)


def test_retryable_errors_until_the_attempts_run_out_go_to_the_probe_not_to_failed(committed_db, fake, dispatcher,
                                                                                    clock):
    # IM never refused: `failed` would be untrue, and one of those calls may have dismissed it.
    did = answered(committed_db, fake, dispatcher, "g4", 60007, times=3, clock=clock)
    d = get(committed_db, did)
    assert (d.status, d.attempts, d.last_error_code) == (Status.AWAITING_CALLBACK, 3, 60007)
    assert d.next_attempt_at <= clock.now  # probed at once
    assert [a.outcome for a in attempts(committed_db, did)] == ["retry", "retry", "exhausted"]
    reconciler = Reconciler(committed_db, fake, confirm_timeout=120, clock=clock)
    assert reconciler.run_once().redispatched == 1  # still there: sent once more
    dispatcher.run_until_idle()
    assert get(committed_db, did).status == Status.AWAITING_CALLBACK
    assert [g.group_id for g in fake.destroyed] == ["g4"]


def test_exhausted_retries_of_a_group_one_call_did_dismiss_are_confirmed_by_the_probe(committed_db, fake, dispatcher,
                                                                                      clock):
    did = answered(committed_db, fake, dispatcher, "g5", CODE_NETWORK, times=3, clock=clock)
    fake.groups.pop("g5")  # a timed-out call had reached IM after all
    assert Reconciler(committed_db, fake, confirm_timeout=120, clock=clock).run_once().confirmed == 1
    d = get(committed_db, did)
    assert (d.status, d.confirmation) == (Status.CONFIRMED, Confirmation.PROBE)


def test_destroy_10015_is_a_group_already_gone(committed_db, fake, dispatcher):
    did = answered(committed_db, fake, dispatcher, "g6", 10015)
    d = get(committed_db, did)
    assert (d.status, d.confirmation, d.last_error_code) == (Status.CONFIRMED, Confirmation.ALREADY_GONE, 10015)


class UnreachableLimiter:
    def acquire(self, api):
        raise RateLimiterUnavailable("rate-limit store unreachable: ConnectionError")


def test_with_the_rate_limit_store_down_nothing_is_sent_counted_or_failed(committed_db, clock):
    fake = FakeIMClient(limiter=UnreachableLimiter())
    fake.add_group("g7")
    [did] = queue(committed_db, "g7")
    dispatcher = Dispatcher(committed_db, fake, worker_id="w1", concurrency=4, max_attempts=3, clock=clock)
    try:
        for _ in range(5):
            dispatcher.run_until_idle()
            clock.advance(10)
    finally:
        dispatcher.close()
    d = get(committed_db, did)
    assert (d.status, d.attempts, d.lease_owner) == (Status.QUEUED, 0, None)
    assert attempts(committed_db, did) == [] and fake.calls == []


def test_callback_before_the_rest_answer_is_never_undone(committed_db, fake, dispatcher):
    """IM may deliver the callback before destroy_group returns; the late answer must not win."""
    fake.on_destroyed = lambda group: deliver_callback(committed_db, group.group_id)
    fake.add_group("g5")
    [did] = queue(committed_db, "g5")
    dispatcher.run_until_idle()
    d = get(committed_db, did)
    assert (d.status, d.confirmation) == (Status.CONFIRMED, Confirmation.CALLBACK)
    assert [a.outcome for a in attempts(committed_db, did)] == ["sent_late"]
    with committed_db.session_scope() as s:
        assert len(s.scalars(select(Dismissal)).all()) == 1


def test_a_row_left_sending_by_a_dead_worker_is_retaken_after_its_lease(committed_db, fake, clock):
    fake.add_group("g6")
    [did] = queue(committed_db, "g6")
    dead = Dispatcher(committed_db, fake, worker_id="dead", lease_seconds=30, clock=clock)
    assert [c.id for c in dead.claim(10)] == [did]  # claimed, then the process "dies"
    dead._pool.shutdown()
    alive = Dispatcher(committed_db, fake, worker_id="alive", lease_seconds=30, clock=clock)
    try:
        assert alive.claim(10) == []
        clock.advance(31)
        alive.run_until_idle()
        d = get(committed_db, did)
        # The claim counted its attempt before a call it never made (the worker died first): the
        # count errs by one on the safe side; the attempt rows record the one real call.
        assert (d.status, d.attempts) == (Status.AWAITING_CALLBACK, 2)
        assert len(fake.calls_to("destroy_group")) == 1
        assert [a.outcome for a in attempts(committed_db, did)] == ["sent"]
    finally:
        alive.close()


def test_stopping_hands_back_unsent_claims(committed_db, fake, clock):
    ids = queue(committed_db, *[f"s{i}" for i in range(5)])
    d = Dispatcher(committed_db, fake, worker_id="w", clock=clock)
    d.stopping.set()
    for claim in d.claim(10):
        d._send(claim)
    d.close()
    assert {get(committed_db, i).status for i in ids} == {Status.QUEUED}
    assert fake.calls == []


def test_concurrent_claimers_never_take_the_same_row(committed_db, fake, clock):
    ids = set(queue(committed_db, *[f"c{i}" for i in range(200)]))
    taken: list[list[str]] = []
    dispatchers = [Dispatcher(committed_db, fake, worker_id=f"w{i}", clock=clock) for i in range(4)]
    barrier = threading.Barrier(4)

    def claim_all(d):
        barrier.wait()
        mine = []
        while batch := d.claim(7):
            mine += [c.id for c in batch]
        taken.append(mine)

    threads = [threading.Thread(target=claim_all, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in dispatchers:
        d._pool.shutdown()
    flat = [i for chunk in taken for i in chunk]
    assert sorted(flat) == sorted(ids)  # every row once, none twice


def test_reconciler_confirms_gone_groups_by_probe(committed_db, fake, dispatcher, clock):
    fake.add_group("r1")
    [did] = queue(committed_db, "r1")
    dispatcher.run_until_idle()
    reconciler = Reconciler(committed_db, fake, confirm_timeout=120, clock=clock)
    assert reconciler.run_once().probed == 0  # not overdue yet
    clock.advance(121)
    report = reconciler.run_once()
    assert (report.probed, report.confirmed) == (1, 1)
    d = get(committed_db, did)
    assert (d.status, d.confirmation, d.probes) == (Status.CONFIRMED, Confirmation.PROBE, 1)
    # A late callback still links itself and becomes the evidence, keeping the first confirmed_at.
    first = d.confirmed_at
    deliver_callback(committed_db, "r1")
    d = get(committed_db, did)
    assert (d.confirmation, d.confirmed_at) == (Confirmation.CALLBACK, first)


def test_reconciler_redispatches_a_surviving_group_once_then_gives_up(committed_db, fake, dispatcher, clock):
    fake.add_group("r2")
    [did] = queue(committed_db, "r2")
    dispatcher.run_until_idle()
    fake.add_group("r2")  # IM said OK, yet the group is still there
    reconciler = Reconciler(committed_db, fake, confirm_timeout=120, clock=clock)
    clock.advance(121)
    assert reconciler.run_once().redispatched == 1
    assert get(committed_db, did).status == Status.QUEUED
    dispatcher.run_until_idle()
    fake.add_group("r2")
    clock.advance(121)
    assert reconciler.run_once().unconfirmed == 1
    d = get(committed_db, did)
    assert (d.status, d.redispatches, d.attempts) == (Status.UNCONFIRMED, 1, 2)
    # Evidence wins even now.
    deliver_callback(committed_db, "r2")
    assert get(committed_db, did).status == Status.CONFIRMED


def test_a_probe_error_text_the_database_cannot_store_does_not_wedge_the_reconciler(committed_db, fake, dispatcher,
                                                                                   clock):
    # PostgreSQL refuses NUL in text: unmended, the batch rolled back and the same rows were
    # probed again on every pass, never counting a probe.
    fake.add_group("nul")
    [did] = queue(committed_db, "nul")
    dispatcher.run_until_idle()
    clock.advance(121)
    fake.script("get_group_info", None, IMError("get_group_info", 60014, "account check\x00timeout \ud800"))
    report = Reconciler(committed_db, fake, confirm_timeout=120, clock=clock).run_once(max_batches=1)
    assert report.errors == 1
    d = get(committed_db, did)
    assert (d.status, d.probes) == (Status.AWAITING_CALLBACK, 1)
    [probe] = [a for a in attempts(committed_db, did) if a.api == "get_group_info"]
    assert probe.error_info == "account check\ufffdtimeout \ufffd"


def test_reconciler_probes_in_batches_of_fifty(committed_db, fake, dispatcher, clock):
    names = [f"b{i}" for i in range(120)]
    for n in names:
        fake.add_group(n)
    queue(committed_db, *names)
    dispatcher.run_until_idle()
    clock.advance(121)
    report = Reconciler(committed_db, fake, confirm_timeout=120, clock=clock).run_once()
    assert report.confirmed == 120
    assert [len(c.args[0]) for c in fake.calls_to("get_group_info")] == [50, 50, 20]


def test_one_open_dismissal_per_group_and_idempotency_key(committed_db):
    with committed_db.session_scope() as s:
        a = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="i1", idempotency_key="k1")
        b = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="i1", idempotency_key="k1")
        c = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="i1")
        assert a.created and not b.created and not c.created
        assert a.dismissal.id == b.dismissal.id == c.dismissal.id


def test_a_retaken_claim_confirmed_by_its_callback_before_sending_is_not_sent(committed_db, fake, dispatcher, clock):
    """A retaken row whose callback lands between claim and send needs no second destroy_group."""
    fake.add_group("late-cb")
    [did] = queue(committed_db, "late-cb")
    dead = Dispatcher(committed_db, fake, worker_id="dead", lease_seconds=30, clock=clock)
    dead.claim(1)  # the first worker claims (and, say, sends), then dies
    dead._pool.shutdown()
    clock.advance(31)
    [claim] = dispatcher.claim(1)
    assert claim.attempts == 2
    deliver_callback(committed_db, "late-cb")
    dispatcher._send(claim)
    assert fake.calls_to("destroy_group") == []
    d = get(committed_db, did)
    assert (d.status, d.confirmation) == (Status.CONFIRMED, Confirmation.CALLBACK)


class WaitDuring:
    """A rate limiter whose wait is long enough for `during` to happen (once)."""

    def __init__(self):
        self.during = None

    def acquire(self, api):
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return 0.0


def test_a_row_retaken_while_its_call_waited_for_the_rate_limit_is_not_sent_twice(committed_db, clock, monkeypatch):
    # Several workers sharing a low rate through Redis can wait longer than the lease; the
    # ownership check must come after that wait, not before it.
    import receiver.dismissals.dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "RECHECK_AFTER", 0.0)  # every claim counts as old
    limiter = WaitDuring()
    fake = FakeIMClient(limiter=limiter)
    fake.add_group("slow")
    [did] = queue(committed_db, "slow")
    first = Dispatcher(committed_db, fake, worker_id="w1", lease_seconds=30, clock=clock)
    second = Dispatcher(committed_db, FakeIMClient(), worker_id="w2", lease_seconds=30, clock=clock)
    try:
        [claim] = first.claim(1)

        def lease_runs_out_and_w2_retakes_the_row():
            clock.advance(31)
            assert [c.id for c in second.claim(1)] == [did]

        limiter.during = lease_runs_out_and_w2_retakes_the_row
        first._send(claim)
        assert fake.calls_to("destroy_group") == []  # w2 sends it; w1 does not too
        d = get(committed_db, did)
        assert (d.status, d.lease_owner, d.attempts) == (Status.SENDING, "w2", 2)
    finally:
        first.close()
        second.close()


def test_an_answer_the_database_refuses_does_not_cost_the_others_their_record(committed_db, fake, dispatcher,
                                                                             monkeypatch):
    """One answer that cannot be written is retried alone; the batch's other answers are kept."""
    from receiver.dismissals.dispatcher import _Answer

    fake.add_group("keep-1")
    fake.add_group("keep-2")
    ids = queue(committed_db, "keep-1", "keep-2", "poison")
    claims = {c.group_id: c for c in dispatcher.claim(3)}
    original = dispatcher._record

    def refusing(session, answer):
        if answer.claim.group_id == "poison":
            raise ValueError("refused by the database")
        return original(session, answer)

    monkeypatch.setattr(dispatcher, "_record", refusing)
    answers = [_Answer(claims[g], 1, utcnow(), None, 200, 0, "", 0.01) for g in ("keep-1", "poison", "keep-2")]
    dispatcher._record_batch(answers)
    assert get(committed_db, ids[0]).status == Status.AWAITING_CALLBACK
    assert get(committed_db, ids[1]).status == Status.AWAITING_CALLBACK
    assert get(committed_db, ids[2]).status == Status.SENDING  # left to its lease


def test_a_claim_takes_expired_leases_first_then_the_queue_oldest_first(committed_db, fake, clock):
    later = queue(committed_db, "q-later")
    clock.advance(5)
    first = queue(committed_db, "q-first-a", "q-first-b")  # the same next_attempt_at: by id
    with committed_db.session_scope() as s:  # q-later is due later than the other two
        s.get(Dismissal, later[0]).next_attempt_at = clock() + timedelta(seconds=1)
    dead = Dispatcher(committed_db, fake, worker_id="dead", lease_seconds=30, clock=clock)
    [stuck] = queue(committed_db, "q-stuck")
    with committed_db.session_scope() as s:
        s.get(Dismissal, stuck).next_attempt_at = clock() - timedelta(seconds=60)
    assert [c.id for c in dead.claim(1)] == [stuck]  # the oldest due row, then the worker "dies"
    dead._pool.shutdown()
    clock.advance(31)
    alive = Dispatcher(committed_db, fake, worker_id="alive", lease_seconds=30, clock=clock)
    try:
        assert [c.id for c in alive.claim(2)] == [stuck, min(first)]
        assert [c.id for c in alive.claim(5)] == [max(first), later[0]]
    finally:
        alive._pool.shutdown()


def test_a_claim_reads_the_queue_in_its_index_order_not_every_due_row(committed_db, fake, clock, backend):
    """With 2,000 queued, the claim's read of the queue walks ix_dismissals_due and stops: no sort."""
    if backend.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's; SQLite serialises claimers and reads its own way")
    from psycopg.sql import Literal
    from sqlalchemy import event

    queue(committed_db, *[f"plan-{i}" for i in range(2000)])
    with committed_db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE dismissals")
    statements: list[tuple[str, object]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if "SKIP LOCKED" in statement and "'queued'" in statement:
            statements.append((statement, parameters))

    d = Dispatcher(committed_db, fake, worker_id="planner", clock=clock)
    event.listen(committed_db.engine, "before_cursor_execute", seen)
    try:
        assert len(d.claim(8)) == 8
    finally:
        event.remove(committed_db.engine, "before_cursor_execute", seen)
        d._pool.shutdown()
    # The plan PostgreSQL keeps once psycopg prepares the statement (after 5 runs): the generic
    # one, which knows no parameter's value (a partial index is usable only if the query spells
    # its condition; a bound IN list would not do).
    [(statement, parameters)] = statements
    with committed_db.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(f"PREPARE claim_plan AS {_numbered(statement, parameters)}")
        raw = conn.connection.dbapi_connection
        values = ", ".join(Literal(v).as_string(raw) for v in parameters.values())  # EXECUTE takes no binds
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE claim_plan({values})"))
    assert "ix_dismissals_due" in plan and "Sort" not in plan, plan


def _numbered(statement: str, parameters: dict) -> str:
    """psycopg's %(name)s placeholders as PREPARE's $1, $2, … (in the parameters' order)."""
    for n, name in enumerate(parameters, 1):
        statement = statement.replace(f"%({name})s", f"${n}")
    return statement
