"""Group commit: concurrent callbacks share transactions, each answered with its own result."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timezone, datetime

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError

from receiver.callbacks.groupcommit import GroupCommitter
from receiver.callbacks.service import Accepted, RequestMeta, store_unmatched
from receiver.dismissals.service import request_batch
from receiver.models import Callback, Dismissal, GroupMember, Source, Status
from receiver.schemas.tencent import GroupDestroyedSchema
from tests.conftest import TEST_SDKAPPID
from tests.helpers import destroyed_body

META = RequestMeta("SdkAppid=x", TEST_SDKAPPID, "Group.CallbackAfterGroupDestroyed", None, "RESTAPI", None,
                   "application/json", "127.0.0.1")


def accepted(group_id: str, event_time: int = 1_700_000_000_000) -> Accepted:
    body = destroyed_body(group_id, event_time=event_time)
    return Accepted(GroupDestroyedSchema().load(body), body, b"{}", META, datetime.now(timezone.utc))


def run_concurrently(committer, transaction, items, statement=None):
    results = [None] * len(items)
    errors = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def go(i):
        barrier.wait()
        try:
            results[i] = committer.record(items[i], transaction, statement)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


@pytest.fixture(params=["transaction", "statement"])
def statement(request, committed_db, backend):
    """The committer's two ways on PostgreSQL: transactions only, or the one-statement path first."""
    if request.param == "transaction":
        return None
    if backend.name != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's (SQLite batches use transactions only)")
    assert committed_db.has_batch_statements
    return committed_db.batch_statement


def test_concurrent_callbacks_are_stored_once_each_in_fewer_transactions(committed_db, statement):
    committer = GroupCommitter()
    items = [accepted(f"gc-{i % 40}") for i in range(60)]  # 40 events, 20 of them delivered twice
    results, errors = run_concurrently(committer, committed_db.batch_transaction, items, statement)
    assert errors == [None] * 60
    assert sorted(r.outcome for r in results).count("stored") == 40
    assert sorted(r.outcome for r in results).count("duplicate") == 20
    for i in range(20):  # both deliveries of an event were answered with its one stored row
        assert results[i].callback_id == results[i + 40].callback_id
    assert len({r.callback_id for r in results}) == 40
    assert committer.recorded == 60 and committer.batches < 60
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 40
        assert s.scalar(select(func.sum(Callback.duplicates))) == 20
        assert s.scalar(select(func.count()).select_from(Dismissal)) == 40
        assert s.scalar(select(func.count()).select_from(GroupMember)) == 120


def test_a_bad_callback_does_not_fail_its_batch(committed_db, backend, statement):
    committer = GroupCommitter()
    good = [accepted(f"ok-{i}") for i in range(10)]
    template = accepted("bad")
    # Longer than the column allows on PostgreSQL (SQLite would store it; then nothing fails).
    bad = Accepted({**template.data, "group_id": "x" * 300}, template.body, b"{}", META, template.received_at)
    results, errors = run_concurrently(committer, committed_db.batch_transaction, good + [bad], statement)
    assert errors[:10] == [None] * 10
    assert all(r.outcome == "stored" for r in results[:10])
    with committed_db.session_scope() as s:
        stored = set(s.scalars(select(Callback.group_id)))
    assert {f"ok-{i}" for i in range(10)} <= stored
    if backend.name == "postgresql":
        assert errors[10] is not None and "x" * 300 not in stored


def broken_connection():
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


@pytest.mark.parametrize("path", ["transaction", "statement"])
def test_an_outage_fails_the_whole_batch_so_each_caller_spools(committed_db, path):
    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    items = [accepted(f"down-{i}") for i in range(8)]
    if path == "transaction":
        results, errors = run_concurrently(committer, broken_connection, items)
    else:  # the one-statement path is out of reach: the transactions are not tried
        results, errors = run_concurrently(committer, committed_db.batch_transaction, items, broken_connection)
    assert results == [None] * 8
    assert all(isinstance(e, OperationalError) for e in errors)
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 0
    # The committer is free again afterwards.
    assert committer.record(accepted("after"), committed_db.batch_transaction).outcome == "stored"


def test_a_connection_the_server_closed_is_replaced_without_an_outage(committed_db, backend, statement, caplog):
    # The committer's pool does not ping before use; a connection killed between two batches
    # (a database restart) must cost one retry, not a spooled batch.
    if backend.name != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    assert committed_db._batch_engine.pool._pre_ping is False
    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    transaction = committed_db.batch_transaction
    assert committer.record(accepted("before-restart"), transaction, statement).outcome == "stored"
    with (statement or transaction)() as kept:  # the connection the next batch will get first
        pid = kept.connection.dbapi_connection.info.backend_pid
    with committed_db.engine.connect() as other:
        assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar() is True
    results, errors = run_concurrently(committer, transaction, [accepted(f"after-restart-{i}") for i in range(4)],
                                       statement)
    assert "the server had closed the connection" in caplog.text  # it was that connection, run again
    assert errors == [None] * 4 and {r.outcome for r in results} == {"stored"}
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 5


def test_a_transaction_the_server_rolls_back_is_run_again_without_an_outage(committed_db, backend, statement, caplog):
    # A deadlock (or serialization failure) rolls the batch back: run it again, do not spool it.
    if backend.name != "postgresql":
        pytest.skip("SQLite serialises writers: no deadlocks to roll back")
    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    rolled_back = []

    deadlock = "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"  # the server's own

    @contextlib.contextmanager
    def deadlocking_once(opener):
        with opener() as conn:
            if not rolled_back and opener is not committed_db.batch_transaction:
                rolled_back.append(True)  # the one statement autocommits: refused, it stored nothing
                conn.exec_driver_sql(deadlock)
            yield conn
            if not rolled_back:  # after the transaction's statements, before its commit: all undone
                rolled_back.append(True)
                conn.exec_driver_sql(deadlock)

    transaction = lambda: deadlocking_once(committed_db.batch_transaction)  # noqa: E731
    one_statement = None if statement is None else (lambda: deadlocking_once(statement))
    results, errors = run_concurrently(committer, transaction, [accepted(f"deadlock-{i}") for i in range(4)],
                                       one_statement)
    assert rolled_back and "the server rolled the transaction back; batch run again" in caplog.text
    assert errors == [None] * 4 and {r.outcome for r in results} == {"stored"}
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 4


def test_after_a_failed_batch_each_callback_gets_its_own_commits_result(committed_db):
    """The one-by-one fallback: a callback whose own commit fails gets that error, its neighbours their rows.

    Driven through `_commit` so that the three callbacks are one batch for certain.
    """
    items = [accepted(f"fb-{i}") for i in range(3)]

    @contextlib.contextmanager
    def commit_fails_with_fb_1():
        with committed_db.batch_transaction() as conn:
            yield conn
            if conn.exec_driver_sql("SELECT count(*) FROM callbacks WHERE group_id = 'fb-1'").scalar():
                # This transaction holds fb-1: it fails at the block's end, and rolls back.
                raise RuntimeError("commit failed")

    out = GroupCommitter()._commit(items, commit_fails_with_fb_1)
    assert len(out) == 3
    assert isinstance(out[1], RuntimeError)
    with committed_db.session_scope() as s:
        stored = dict(s.execute(select(Callback.group_id, Callback.id).where(Callback.group_id.like("fb-%"))).all())
    assert set(stored) == {"fb-0", "fb-2"}
    assert (out[0].outcome, out[0].callback_id) == ("stored", stored["fb-0"])
    assert (out[2].outcome, out[2].callback_id) == ("stored", stored["fb-2"])


def test_batches_keep_their_connection_unless_it_was_lost(committed_db, backend):
    if backend.name != "postgresql":
        pytest.skip("SQLite batches use the engine's own connection")

    def backend_pid() -> int:
        with committed_db.batch_transaction() as conn:
            return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()

    first = backend_pid()
    assert backend_pid() == first  # the same server connection, batch after batch
    with pytest.raises(RuntimeError), committed_db.batch_transaction() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE rolled_back (x int)")
        raise RuntimeError("a batch that fails is rolled back")
    assert backend_pid() == first  # rolled back: still fit for the next batch
    with committed_db.batch_transaction() as conn:  # nothing of the failed batch remains
        assert conn.exec_driver_sql("SELECT to_regclass('pg_temp.rolled_back')").scalar() is None
    with committed_db.engine.connect() as other:
        other.exec_driver_sql(f"SELECT pg_terminate_backend({int(first)})")
    with pytest.raises(OperationalError), committed_db.batch_transaction() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert backend_pid() != first  # the lost one was dropped, not handed to the next batch


def test_two_batches_at_once_never_share_a_connection(committed_db, backend):
    if backend.name != "postgresql":
        pytest.skip("SQLite batches use the engine's own connection")
    inside, release = threading.Barrier(2), threading.Event()
    pids: list[int] = []

    def batch() -> None:
        with committed_db.batch_transaction() as conn:
            pids.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
            inside.wait(10)
            release.wait(10)

    threads = [threading.Thread(target=batch) for _ in range(2)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(30)
    assert len(pids) == 2 and pids[0] != pids[1]


def now_ms() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)


def test_the_one_statement_path_leaves_redeliveries_and_awaited_groups_to_the_transaction(committed_db, backend):
    """A mixed batch: each callback ends as `store_many` alone would leave it, whichever path took it."""
    if backend.name != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")
    with committed_db.session_scope() as s:
        ours = request_batch(s, sdkappid=TEST_SDKAPPID, group_ids=["mix-ours"])[0].dismissal.id
    committer = GroupCommitter()
    earlier = accepted("mix-earlier")
    assert committer.record(earlier, committed_db.batch_transaction, committed_db.batch_statement).outcome == "stored"
    new = accepted("mix-new")
    batch = [new, earlier, accepted("mix-ours", event_time=now_ms() + 1000), new, accepted("mix-new-2")]

    with committed_db.batch_statement() as conn:  # what the one statement takes
        first = store_unmatched(conn, batch)
    assert [r is not None for r in first] == [True, False, False, False, True]
    with committed_db.session_scope() as s:  # committed on its own, without a transaction around it
        assert set(s.scalars(select(Callback.group_id))) == {"mix-earlier", "mix-new", "mix-new-2"}
    with committed_db.session_scope() as s:
        s.execute(delete(GroupMember).where(GroupMember.group_id.like("mix-new%")))
        s.execute(delete(Dismissal).where(Dismissal.group_id.like("mix-new%")))
        s.execute(delete(Callback).where(Callback.group_id.like("mix-new%")))

    out = committer._commit(batch, committed_db.batch_transaction, committed_db.batch_statement)
    assert [r.outcome for r in out] == ["stored", "duplicate", "stored", "duplicate", "stored"]
    assert out[3].callback_id == out[0].callback_id
    assert out[1].callback_id == committer.record(earlier, committed_db.batch_transaction).callback_id
    assert (out[2].dismissal_id, out[2].matched_request) == (ours, True)
    assert out[0].matched_request is False and out[0].dismissal_id != ours
    with committed_db.session_scope() as s:
        rows = {c.group_id: c for c in s.scalars(select(Callback))}
        assert set(rows) == {"mix-earlier", "mix-new", "mix-ours", "mix-new-2"}
        assert rows["mix-new"].duplicates == 1 and rows["mix-earlier"].duplicates == 2
        confirmed = s.get(Dismissal, ours)
        assert (confirmed.status, confirmed.callback_id) == (Status.CONFIRMED, out[2].callback_id)
        external = s.get(Dismissal, out[0].dismissal_id)
        assert (external.source, external.callback_id, external.status) == (Source.EXTERNAL, out[0].callback_id,
                                                                             Status.CONFIRMED)
        members = s.execute(select(GroupMember.group_id, GroupMember.dismissal_id, Dismissal.callback_id)
                            .join(Dismissal, Dismissal.id == GroupMember.dismissal_id)).all()
        # Three members per event, on its own callback and dismissal (none for the redeliveries).
        assert sorted(m for m in members if m[0] != "mix-earlier") == sorted(
            (group, r.dismissal_id, r.callback_id) for group, r in (("mix-new", out[0]), ("mix-ours", out[2]),
                                                                     ("mix-new-2", out[4])) for _ in range(3))
        assert len([m for m in members if m[0] == "mix-earlier"]) == 3


def test_what_the_one_statement_stored_stands_when_the_transaction_path_then_fails(committed_db, backend):
    if backend.name != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")
    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    repeat = accepted("part-repeat")
    committer.record(repeat, committed_db.batch_transaction)
    out = committer._commit([accepted("part-new"), repeat], broken_connection, committed_db.batch_statement)
    assert out[0].outcome == "stored" and isinstance(out[1], OperationalError)
    with committed_db.session_scope() as s:
        stored = s.get(Callback, out[0].callback_id)
        assert stored.group_id == "part-new" and s.get(Dismissal, out[0].dismissal_id) is not None
        # The redelivery's caller spools it; nothing counted it yet.
        assert s.scalar(select(Callback.duplicates).where(Callback.group_id == "part-repeat")) == 0


def test_a_failing_one_statement_path_hands_the_batch_to_the_transaction(committed_db, backend, caplog):
    if backend.name != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")

    @contextlib.contextmanager
    def statement_that_fails():
        with committed_db.batch_statement() as conn:
            yield conn
            raise RuntimeError("a bug in the one-statement path")

    out = GroupCommitter()._commit([accepted("fallback-0"), accepted("fallback-1")], committed_db.batch_transaction,
                                   statement_that_fails)
    # The statement had committed: the transaction path finds both stored and says so.
    assert [r.outcome for r in out] == ["duplicate", "duplicate"]
    warned = [r for r in caplog.records if "the one-statement path failed" in r.getMessage()]
    assert [r.error for r in warned] == ["RuntimeError"]
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 2


def test_batch_statements_autocommit_on_a_kept_connection(committed_db, backend):
    if backend.name != "postgresql":
        assert not committed_db.has_batch_statements
        pytest.skip("batch statements are PostgreSQL's")

    def statement_connection():
        with committed_db.batch_statement() as conn:
            return conn.connection.dbapi_connection.info.backend_pid, conn.connection.dbapi_connection.autocommit

    first = statement_connection()
    assert first[1] is True and statement_connection() == first  # kept, and still in autocommit
    with committed_db.batch_transaction() as conn:  # the transaction path's connections are others
        assert conn.connection.dbapi_connection.info.backend_pid != first[0]
        assert conn.connection.dbapi_connection.autocommit is False
    with committed_db.batch_statement() as conn:  # each statement is committed at once
        store_unmatched(conn, [accepted("autocommitted")])
        with committed_db.engine.connect() as other:
            assert other.exec_driver_sql("SELECT count(*) FROM callbacks WHERE group_id = 'autocommitted'").scalar() == 1


def test_two_processes_worth_of_committers_store_each_event_once(committed_db, backend):
    """Two committers (two web workers) storing overlapping batches, with dismissals of ours
    among them: every event stored once, every one of ours confirmed once, no deadlock."""
    if backend.name != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")
    with committed_db.session_scope() as s:
        ours = {r.dismissal.group_id: r.dismissal.id
                for r in request_batch(s, sdkappid=TEST_SDKAPPID, group_ids=[f"two-{i}" for i in range(0, 30, 3)])}
    when = now_ms() + 1000
    events = [accepted(f"two-{i}", event_time=when + i) for i in range(30)]
    workers = [GroupCommitter(), GroupCommitter()]
    results: list = []
    errors: list = []

    def worker(committer, order):
        r, e = run_concurrently(committer, committed_db.batch_transaction, [events[i] for i in order],
                                committed_db.batch_statement)
        results.extend(r)
        errors.extend(e)

    threads = [threading.Thread(target=worker, args=(workers[0], range(30))),
               threading.Thread(target=worker, args=(workers[1], range(29, -1, -1)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [None] * 60
    assert sorted(r.outcome for r in results).count("stored") == 30
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 30
        assert s.scalar(select(func.sum(Callback.duplicates))) == 30
        assert s.scalar(select(func.count()).select_from(GroupMember)) == 90
        for group, dismissal_id in ours.items():
            d = s.get(Dismissal, dismissal_id)
            assert d.status == Status.CONFIRMED and d.callback_id is not None, group
        assert s.scalar(select(func.count()).select_from(Dismissal)) == 30  # 10 ours + 20 external


def test_callbacks_that_confirm_our_dismissals_soon_skip_the_statement(committed_db, backend):
    """An app whose callbacks confirm our own dismissals: the statement would store none of them,
    so after a few batches it is only tried to probe; the callbacks are matched either way."""
    if backend.name != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")
    groups = [f"conf-{i}" for i in range(40)]
    with committed_db.session_scope() as s:
        ours = {r.dismissal.group_id: r.dismissal.id for r in request_batch(s, sdkappid=TEST_SDKAPPID, group_ids=groups)}
    opened = []

    @contextlib.contextmanager
    def counted_statement():
        opened.append(1)
        with committed_db.batch_statement() as conn:
            yield conn

    committer = GroupCommitter()
    when = now_ms() + 1000
    for i, group in enumerate(groups):  # one batch each
        result = committer.record(accepted(group, event_time=when + i), committed_db.batch_transaction,
                                  counted_statement)
        assert (result.outcome, result.dismissal_id, result.matched_request) == ("stored", ours[group], True)
    path = committer.statement_path
    assert len(opened) == path.tried < 20 and path.skipped == 40 - path.tried
    for i in range(20):  # then the traffic turns to other apps' dismissals: it is back within 16 batches
        committer.record(accepted(f"ext-{i}"), committed_db.batch_transaction, counted_statement)
    assert path.whole_share > path.worth
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Dismissal).where(Dismissal.source == Source.EXTERNAL)) == 20


def test_callers_behind_a_batch_that_hangs_give_up_in_time_and_the_committer_recovers(committed_db):
    # A database that stops answering mid-statement holds its batch's thread; the others must
    # not wait with it (each answers from the spool instead: the endpoint's BatchTimeout path).
    from receiver.batching import BatchTimeout

    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    hanging, go_on = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def hangs_first():
        with committed_db.batch_transaction() as conn:
            if not hanging.is_set():
                hanging.set()
                assert go_on.wait(10)
            yield conn

    leader: list = []
    thread = threading.Thread(target=lambda: leader.append(committer.record(accepted("hang-0"), hangs_first)))
    thread.start()
    assert hanging.wait(5)
    outcomes: list = [None] * 3

    def follower(i):
        try:
            outcomes[i] = committer.record(accepted(f"hang-{i + 1}"), hangs_first, timeout=0.3)
        except BatchTimeout as exc:
            outcomes[i] = exc

    started = time.monotonic()
    followers = [threading.Thread(target=follower, args=(i,)) for i in range(3)]
    for t in followers:
        t.start()
    for t in followers:
        t.join(5)
    assert all(isinstance(o, BatchTimeout) for o in outcomes) and time.monotonic() - started < 3
    go_on.set()
    thread.join(10)
    assert leader[0].outcome == "stored"
    # Nobody is left leading a queue that no one serves: the next callback is stored at once.
    assert committer.record(accepted("after-the-hang"), committed_db.batch_transaction, timeout=5).outcome == "stored"
    with committed_db.session_scope() as s:
        stored = set(s.scalars(select(Callback.group_id)))
    assert {"hang-0", "after-the-hang"} <= stored and not stored & {"hang-1", "hang-2", "hang-3"}
