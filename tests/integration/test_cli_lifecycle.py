"""The lifecycle CLI: dismiss (args, --file, --wait), status, and the refusals without IM credentials."""

from __future__ import annotations

import json
import threading

from sqlalchemy import select

from receiver.dismissals.dispatcher import Dispatcher
from receiver.im.fake import FakeIMClient
from receiver.models import Dismissal, Status


def test_dismiss_queues_from_args_and_file_and_reports_open_ones(app, db, tmp_path):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# groups to close\ng-file-1\n\ng-file-2\ng-arg-1\n")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["dismiss", "g-arg-1", "--file", str(ids_file), "--reason", "cleanup"])
    assert result.exit_code == 0, result.output
    assert "queued 3 new dismissal(s); 0 already open" in result.output
    result = runner.invoke(args=["dismiss", "g-arg-1"])
    assert "queued 0 new dismissal(s); 1 already open" in result.output
    with db.session_scope() as s:
        rows = s.scalars(select(Dismissal).order_by(Dismissal.group_id)).all()
        assert [(d.group_id, d.status, d.reason, d.requested_by) for d in rows] == [
            ("g-arg-1", Status.QUEUED, "cleanup", "cli"),
            ("g-file-1", Status.QUEUED, "cleanup", "cli"),
            ("g-file-2", Status.QUEUED, "cleanup", "cli"),
        ]


def test_waiting_counts_a_dismissal_listed_twice_once(db):
    from receiver.dismissals.progress import wait_for_final
    from receiver.dismissals.service import request_dismissal
    from tests.conftest import TEST_SDKAPPID

    with db.session_scope() as s:
        d = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="twice").dismissal
        d.status = Status.CONFIRMED
        did = d.id
    # The same group in two chunks of a large `dismiss` comes back as one dismissal, twice.
    assert wait_for_final(db, [did, did], timeout=2, interval=0.05) == {"confirmed": 1}


def test_worker_ids_differ_even_with_the_same_host_and_pid():
    from receiver.dismissals.worker import worker_id

    first, second = worker_id(), worker_id()
    assert first != second and len(first) <= 64 and first.rsplit(":", 2)[0] == second.rsplit(":", 2)[0]


def test_dismiss_rejects_bad_input_clearly(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["dismiss"])
    assert result.exit_code == 2 and "give at least one GROUP_ID" in result.output
    result = runner.invoke(args=["dismiss", "x" * 49])
    assert result.exit_code == 2 and "at most 48 bytes" in result.output
    result = runner.invoke(args=["dismiss", "bad\u00e9id"])
    assert result.exit_code == 2 and "printable ASCII" in result.output


def test_status_prints_the_api_document(app, db):
    runner = app.test_cli_runner()
    runner.invoke(args=["dismiss", "g-status"])
    with db.session_scope() as s:
        did = s.scalar(select(Dismissal.id))
    result = runner.invoke(args=["status", did])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert (doc["id"], doc["group_id"], doc["status"], doc["source"]) == (did, "g-status", "queued", "api")
    missing = runner.invoke(args=["status", "nope"])
    assert missing.exit_code == 1 and "no dismissal 'nope'" in missing.output


def test_worker_and_reconcile_refuse_without_a_secret_key(app):
    runner = app.test_cli_runner()
    for command in ("worker", "reconcile"):
        result = runner.invoke(args=[command])
        assert result.exit_code == 1
        assert "IM_SECRET_KEY is not set" in result.output


def test_dismiss_wait_follows_to_the_final_state(committed_db, app_factory):
    app = app_factory(committed_db)
    fake = FakeIMClient()  # no such groups: IM answers 10010, which is final (already gone)
    dispatcher = Dispatcher(committed_db, fake, worker_id="cli-test")
    stop = threading.Event()

    def work():
        while not stop.is_set():
            dispatcher.pump()
            stop.wait(0.05)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        result = app.test_cli_runner().invoke(args=["dismiss", "w1", "w2", "w3", "--wait", "--timeout", "20"])
    finally:
        stop.set()
        thread.join()
        dispatcher.close()
    assert result.exit_code == 0, result.output
    assert "final: confirmed 3" in result.output
