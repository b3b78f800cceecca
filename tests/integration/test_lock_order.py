"""Batches that write the same dismissals at once wait for each other but never deadlock.

The dispatcher records IM's answers for many rows in one transaction while the web process
records the callbacks confirming those same rows in another; both must lock rows in one order.
(Seen in the dispatch benchmark before the fix: PostgreSQL's deadlock detector broke one of
them after a second, stalling the sender.)
"""

from __future__ import annotations

import random
import threading

import pytest

from receiver.callbacks.service import Accepted, RequestMeta, record_many
from receiver.dismissals.dispatcher import Dispatcher, _Answer
from receiver.im.fake import FakeIMClient
from receiver.models import utcnow
from receiver.schemas.tencent import GroupDestroyedSchema
from tests.conftest import TEST_SDKAPPID
from tests.helpers import destroyed_body
from tests.integration.test_dispatcher import queue

META = RequestMeta("SdkAppid=x", TEST_SDKAPPID, "Group.CallbackAfterGroupDestroyed", None, "RESTAPI", None,
                   "application/json", "127.0.0.1")
ROWS = 12
ROUNDS = 8


def test_answers_and_callbacks_for_the_same_rows_do_not_deadlock(committed_db, backend):
    if backend.name != "postgresql":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): no row locks to order")
    rng = random.Random(7)
    dispatcher = Dispatcher(committed_db, FakeIMClient(), worker_id="w1")
    try:
        for round_ in range(ROUNDS):
            groups = [f"lock-{round_}-{i}" for i in range(ROWS)]
            queue(committed_db, *groups)
            claims = dispatcher.claim(ROWS)
            assert len(claims) == ROWS
            started = utcnow()
            answers = [_Answer(c, c.attempts, started, None, 200, 0, "", 0.01) for c in claims]
            rng.shuffle(answers)
            event_ms = int(started.timestamp() * 1000) + 1000
            items = []
            for i, gid in enumerate(reversed(groups)):  # the opposite order, by event time too
                body = destroyed_body(gid, event_time=event_ms + i)
                items.append(Accepted(GroupDestroyedSchema().load(body), body, b"{}", META, started))
            errors: list[BaseException] = []
            barrier = threading.Barrier(2)

            def run(work):
                barrier.wait()
                try:
                    work()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            def callbacks():
                session = committed_db.session_factory()
                try:
                    results = record_many(session, items)
                    assert all(r.matched_request for r in results)
                finally:
                    session.close()

            threads = [threading.Thread(target=run, args=(lambda: dispatcher._write(answers),)),
                       threading.Thread(target=run, args=(callbacks,))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert errors == [], f"round {round_}: {errors!r}"
    finally:
        dispatcher.close()
