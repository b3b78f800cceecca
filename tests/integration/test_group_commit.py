"""Group commit: concurrent callbacks share transactions, each answered with its own result."""

from __future__ import annotations

import contextlib
import threading
from datetime import timezone, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from receiver.callbacks.groupcommit import GroupCommitter
from receiver.callbacks.service import Accepted, RequestMeta
from receiver.models import Callback, Dismissal, GroupMember
from receiver.schemas.tencent import GroupDestroyedSchema
from tests.conftest import TEST_SDKAPPID
from tests.helpers import destroyed_body

META = RequestMeta("SdkAppid=x", TEST_SDKAPPID, "Group.CallbackAfterGroupDestroyed", None, "RESTAPI", None,
                   "application/json", "127.0.0.1")


def accepted(group_id: str, event_time: int = 1_700_000_000_000) -> Accepted:
    body = destroyed_body(group_id, event_time=event_time)
    return Accepted(GroupDestroyedSchema().load(body), body, b"{}", META, datetime.now(timezone.utc))


def run_concurrently(committer, transaction, items):
    results = [None] * len(items)
    errors = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def go(i):
        barrier.wait()
        try:
            results[i] = committer.record(items[i], transaction)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_concurrent_callbacks_are_stored_once_each_in_fewer_transactions(committed_db):
    committer = GroupCommitter()
    items = [accepted(f"gc-{i % 40}") for i in range(60)]  # 40 events, 20 of them delivered twice
    results, errors = run_concurrently(committer, committed_db.batch_transaction, items)
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


def test_a_bad_callback_does_not_fail_its_batch(committed_db, backend):
    committer = GroupCommitter()
    good = [accepted(f"ok-{i}") for i in range(10)]
    template = accepted("bad")
    # Longer than the column allows on PostgreSQL (SQLite would store it; then nothing fails).
    bad = Accepted({**template.data, "group_id": "x" * 300}, template.body, b"{}", META, template.received_at)
    results, errors = run_concurrently(committer, committed_db.batch_transaction, good + [bad])
    assert errors[:10] == [None] * 10
    assert all(r.outcome == "stored" for r in results[:10])
    with committed_db.session_scope() as s:
        stored = set(s.scalars(select(Callback.group_id)))
    assert {f"ok-{i}" for i in range(10)} <= stored
    if backend.name == "postgresql":
        assert errors[10] is not None and "x" * 300 not in stored


def test_an_outage_fails_the_whole_batch_so_each_caller_spools(committed_db):
    def broken_transaction():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    results, errors = run_concurrently(committer, broken_transaction, [accepted(f"down-{i}") for i in range(8)])
    assert results == [None] * 8
    assert all(isinstance(e, OperationalError) for e in errors)
    # The committer is free again afterwards.
    assert committer.record(accepted("after"), committed_db.batch_transaction).outcome == "stored"


def test_a_connection_the_server_closed_is_replaced_without_an_outage(committed_db, backend):
    # The committer's pool does not ping before use; a connection killed between two batches
    # (a database restart) must cost one retry, not a spooled batch.
    if backend.name != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    assert committed_db._batch_engine.pool._pre_ping is False
    committer = GroupCommitter(is_outage=lambda exc: isinstance(exc, OperationalError))
    transaction = committed_db.batch_transaction
    assert committer.record(accepted("before-restart"), transaction).outcome == "stored"
    with committed_db.batch_transaction() as kept:  # the connection the next batch will get
        pid = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with committed_db.engine.connect() as other:
        assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar() is True
    results, errors = run_concurrently(committer, transaction, [accepted(f"after-restart-{i}") for i in range(4)])
    assert errors == [None] * 4 and {r.outcome for r in results} == {"stored"}
    with committed_db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Callback)) == 5


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
