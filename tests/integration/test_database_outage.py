"""A database outage loses no callback: each is acknowledged in time, spooled, and drained once."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import func, select

from receiver.db import Database
from receiver.models import Callback, CallbackState, Dismissal
from tests.conftest import TEST_SDKAPPID
from tests.fixtures.tcpproxy import TCPProxy
from tests.helpers import callback_query, destroyed_body, encode

N = 2000


class Outage:
    """Make the backend unreachable for a while: a cut proxy (PostgreSQL) or a held write lock (SQLite)."""

    def __init__(self, backend):
        self.backend = backend
        self.proxy = None
        self._lock_conn = None
        if backend.name == "postgresql":
            parts = urlsplit(backend.url)
            self.proxy = TCPProxy(parts.hostname, parts.port or 5432)
            netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{self.proxy.port}")
            self.url = urlunsplit(parts._replace(netloc=netloc))
        else:
            self.url = backend.url

    def begin(self):
        if self.proxy:
            self.proxy.cut()
        else:
            self._lock_conn = self.backend.engine.raw_connection()
            self._lock_conn.driver_connection.execute("BEGIN EXCLUSIVE")

    def end(self):
        if self.proxy:
            self.proxy.restore()
        else:
            self._lock_conn.driver_connection.execute("ROLLBACK")
            self._lock_conn.close()

    def close(self):
        if self.proxy:
            self.proxy.close()


@pytest.fixture
def outage(backend):
    o = Outage(backend)
    yield o
    o.close()


def test_callbacks_during_an_outage_are_acknowledged_spooled_and_stored_exactly_once(
        backend, committed_db, outage, app_factory, live_server_factory, tmp_path):
    database = Database(outage.url)
    app = app_factory(database)
    server = live_server_factory(app, threaded=True)
    url = f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}"
    bodies = [encode(destroyed_body(f"outage-{i}", event_time=1_700_000_000_000 + i)) for i in range(N)]
    slowest = 0.0
    statuses = []
    ready_during = None
    with requests.Session() as http:
        for i, raw in enumerate(bodies):
            if i == 400:
                outage.begin()
            if i == 800:
                ready_during = http.get(f"{server.url}/readyz", timeout=10)
                outage.end()
            t0 = time.monotonic()
            resp = http.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=10)
            slowest = max(slowest, time.monotonic() - t0)
            statuses.append((resp.status_code, resp.json()["ErrorCode"]))
    assert set(statuses) == {(200, 0)}
    assert slowest < 2.0, f"a callback took {slowest:.2f}s to be acknowledged"
    # /readyz said so during the outage, with the spool depth.
    assert ready_during.status_code == 503
    assert ready_during.json()["checks"]["spool_depth"] > 0
    metrics = app.extensions["receiver.metrics"]
    assert metrics.spooled._value.get() > 0

    deadline = time.monotonic() + 30
    while True:
        with committed_db.session_scope() as s:
            stored = s.scalar(select(func.count()).select_from(Callback).where(Callback.state == CallbackState.ACCEPTED))
        if (stored >= N and metrics.drained._value.get() == metrics.spooled._value.get()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    with committed_db.session_scope() as s:
        groups = s.scalars(select(Callback.group_id)).all()
        assert sorted(groups) == sorted(f"outage-{i}" for i in range(N))  # all, once each
        assert s.scalar(select(func.sum(Callback.duplicates))) == 0
        assert s.scalar(select(func.count()).select_from(Dismissal)) == N
    assert metrics.drained._value.get() == metrics.spooled._value.get()
    assert app.extensions["receiver.spool"].depth() == 0
    assert server.http.get(f"{server.url}/readyz").json()["checks"]["spool_depth"] == 0
    database.dispose()


def test_the_worker_holds_im_answers_through_an_outage_and_loses_no_claim(committed_db, outage):
    """IM answered while the database was away: the answer is recorded once it is back."""
    from receiver.dismissals.dispatcher import Dispatcher
    from receiver.dismissals.service import request_batch
    from receiver.im.fake import FakeIMClient
    from receiver.models import Status

    database = Database(outage.url)
    fake = FakeIMClient()
    groups = [f"held-{i}" for i in range(5)]
    for gid in groups:
        fake.add_group(gid)
    with database.session_scope() as s:
        ids = [r.dismissal.id for r in request_batch(s, sdkappid=TEST_SDKAPPID, group_ids=groups)]
    cut = threading.Event()

    def go_down(_group):
        if not cut.is_set():
            cut.set()
            outage.begin()
            threading.Timer(2.0, outage.end).start()

    fake.on_destroyed = go_down
    dispatcher = Dispatcher(database, fake, worker_id="outage-worker", concurrency=1, lease_seconds=30)
    try:
        dispatcher.run_until_idle(timeout=30)
        dispatcher.drain(timeout=30)
    finally:
        dispatcher.close()
        database.dispose()
    assert cut.is_set()
    with committed_db.session_scope() as s:
        rows = s.scalars(select(Dismissal).where(Dismissal.id.in_(ids))).all()
        assert {d.status for d in rows} == {Status.AWAITING_CALLBACK}
        assert [d.attempts for d in rows] == [1] * 5
    assert len(fake.calls_to("destroy_group")) == 5  # nothing sent twice


def test_a_spool_directory_that_cannot_be_written_stops_the_app_at_start(db, tmp_path):
    # Found at start, not during an outage with callbacks to keep (they would be answered 500).
    from pathlib import Path

    from receiver import create_app
    from receiver.config import ConfigError
    from receiver.metrics import Metrics
    from tests.conftest import make_config

    def build(spool_dir):
        return create_app(make_config(None, database_url=db.url, spool_dir=spool_dir), database=db, metrics=Metrics())

    (tmp_path / "a-file").write_text("not a directory")
    for bad in (Path("/proc/receiver-spool"), tmp_path / "a-file"):
        with pytest.raises(ConfigError, match="SPOOL_DIR"):
            build(bad)
    assert build(tmp_path / "new" / "spool").extensions["receiver.spool"].segments() == []


def test_a_database_that_takes_no_writes_keeps_callbacks_in_the_spool_until_it_does(backend, app_factory, tmp_path,
                                                                                     live_server_factory):
    spool_dir = tmp_path / "spool"  # app_factory's
    # A read-only primary after a failover: not an outage to the driver (it answers, with an
    # error), and quarantining fails the same way. The callback must neither be lost nor a 500.
    if backend.name != "postgresql":
        pytest.skip("SQLite's read-only error is an OperationalError: the outage path, tested above")
    from urllib.parse import quote

    read_only = Database(f"{backend.url}{quote(' -cdefault_transaction_read_only=on')}")
    writable = Database(backend.url)
    try:
        server = live_server_factory(app_factory(read_only))
        resp = requests.post(f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}",
                             data=encode(destroyed_body("g-read-only")), headers={"Content-Type": "application/json"},
                             timeout=10)
        assert resp.status_code == 200 and resp.json()["ErrorCode"] == 0
        spool = server.app.extensions["receiver.spool"]
        drainer = server.app.extensions["receiver.drainer"]
        assert spool.depth() == 1
        assert drainer.drain_once() == 0 and spool.depth() == 1  # still read-only: kept, not set aside
        assert not list(spool_dir.glob("*.bad"))
        # The failover is over: a drainer on the writable primary stores it. (The app's own
        # drainer thread keeps trying the read-only one meanwhile, and keeps the line each time.)
        from receiver.callbacks.outage import SpoolDrainer

        after = SpoolDrainer(spool, writable)
        deadline = time.monotonic() + 15
        while spool.depth() and time.monotonic() < deadline:
            after.drain_once()  # 0 while the app's thread holds the segment for its own try
            time.sleep(0.1)
        assert spool.depth() == 0
        with writable.session_scope() as s:
            assert s.scalars(select(Callback.group_id).where(Callback.state == CallbackState.ACCEPTED)).all() == \
                ["g-read-only"]
    finally:
        read_only.dispose()
        writable.dispose()
        backend.clean()


def test_callbacks_behind_a_batch_the_database_stopped_answering_are_spooled_in_time(backend, app_factory, tmp_path,
                                                                                    live_server_factory):
    # The leader's statement hangs (a server gone silent mid-statement); the callbacks queued
    # behind it must be answered within IM's 2 s, from the spool, not wait with it.
    import contextlib

    database = Database(backend.url)
    hanging, go_on = threading.Event(), threading.Event()
    openers = {"batch_transaction": database.batch_transaction, "batch_statement": database.batch_statement}

    def hanging_first(name):
        @contextlib.contextmanager
        def opener():
            with openers[name]() as conn:
                if not hanging.is_set():
                    hanging.set()
                    assert go_on.wait(20)
                yield conn
        return opener

    database.batch_transaction = hanging_first("batch_transaction")
    database.batch_statement = hanging_first("batch_statement")
    try:
        server = live_server_factory(app_factory(database), threaded=True)
        url = f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}"

        def send(group_id):
            return requests.post(url, data=encode(destroyed_body(group_id)), headers={"Content-Type": "application/json"},
                                 timeout=30)

        first = threading.Thread(target=lambda: send("silent-0"))
        first.start()
        assert hanging.wait(10)
        started = time.monotonic()
        answers = [send(f"silent-{i}") for i in (1, 2)]
        assert time.monotonic() - started < 4  # each within CALLBACK_LOCK_WAIT_MS and a spool write
        assert [(a.status_code, a.json()["ErrorCode"]) for a in answers] == [(200, 0), (200, 0)]
        assert server.app.extensions["receiver.spool"].depth() == 2
        go_on.set()
        first.join(20)
        spool = server.app.extensions["receiver.spool"]
        deadline = time.monotonic() + 15  # the drainer, woken by the spooling, stores them
        while spool.depth() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spool.depth() == 0
        with database.session_scope() as s:
            assert set(s.scalars(select(Callback.group_id))) == {"silent-0", "silent-1", "silent-2"}
    finally:
        go_on.set()
        database.dispose()
        backend.clean()
