"""The whole loop over real HTTP: simulator + receiver + worker, with IM's faults turned on."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests
from sqlalchemy import select

from receiver.config import Secret
from receiver.dismissals.worker import Worker, WorkerSettings
from receiver.im.client import IMRestClient
from receiver.im.errors import IMError
from receiver.im.ratelimit import build_limiter, build_rate_limiter
from receiver.models import Confirmation, Dismissal, Source, Status
from tests.conftest import API_TOKEN
from tests.fixtures.imsim import SIM_CALLBACK_TOKEN, client_config

GROUP_TYPES = ["Private", "Public", "ChatRoom", "AVChatRoom", "Community"]

pytestmark = pytest.mark.slow


class Loop:
    """A running simulator, receiver and worker around one database."""

    def __init__(self, database, app_factory, live_server_factory, imsim_factory, *, confirm_timeout=2, **faults):
        self.database = database
        token = Secret(SIM_CALLBACK_TOKEN)
        self.server = live_server_factory(app_factory(database, im_callback_tokens=(token,)), threaded=True)
        self.sim = imsim_factory(callback_url=f"{self.server.url}/im/callback", callback_token=token, seed=7, **faults)
        self.config = client_config(self.sim, database_url=database.url, confirm_timeout_seconds=confirm_timeout,
                                    dispatch_lease_seconds=10)
        self.client = IMRestClient(self.config, limiter=build_limiter(self.config, key_prefix=f"e2e{id(self)}"))
        self.worker = Worker(self.config, database, self.client,
                             settings=WorkerSettings(poll_interval=0.02, reconcile_interval=0.3), holder="e2e-worker")
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {API_TOKEN}"

    def create_groups(self, n: int) -> list[str]:
        creator = IMRestClient(self.config, limiter=build_rate_limiter(200, key_prefix=f"mk{id(self)}"))
        try:
            ids = []
            for i in range(n):
                kind = GROUP_TYPES[i % len(GROUP_TYPES)]
                members = () if kind == "AVChatRoom" else (f"u{i}", f"u{i + 1}")
                owner = None if kind == "AVChatRoom" else f"u{i}"
                for _ in range(10):  # the simulator's error dice apply to create_group too
                    try:
                        ids.append(creator.create_group(kind, f"group {i}", owner=owner, members=members))
                        break
                    except IMError as exc:
                        assert exc.retryable, exc
            return ids
        finally:
            creator.close()

    def dismiss(self, group_ids: list[str]) -> list[str]:
        resp = self.http.post(f"{self.server.url}/v1/dismissals/batch",
                              json={"group_ids": group_ids, "reason": "e2e", "requested_by": "tests"}, timeout=60)
        assert resp.status_code == 202, resp.text
        return [item["id"] for item in resp.json()["items"]]

    def wait_final(self, ids: list[str], timeout: float) -> dict[str, Dismissal]:
        deadline = time.monotonic() + timeout
        while True:
            with self.database.session_scope() as s:
                rows = {d.id: d for d in s.scalars(select(Dismissal).where(Dismissal.id.in_(ids)))}
            if all(d.is_final for d in rows.values()) or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def stats(self) -> dict:
        return requests.get(f"{self.sim.url}/_sim/stats", timeout=5).json()

    def stop(self):
        self.worker.stop()
        self.thread.join(30)
        self.client.close()
        self.http.close()


@pytest.fixture
def loop_factory(committed_db, app_factory, live_server_factory, imsim_factory):
    loops: list[Loop] = []

    def start(**kw) -> Loop:
        loop = Loop(committed_db, app_factory, live_server_factory, imsim_factory, **kw)
        loops.append(loop)
        return loop

    yield start
    for loop in loops:
        loop.stop()


def assert_every_request_confirmed_once(loop: Loop, ids: list[str], rows: dict[str, Dismissal]) -> Counter:
    assert len(rows) == len(ids) == len(set(ids))
    states = Counter((d.status, d.confirmation) for d in rows.values())
    not_confirmed = {k: v for k, v in states.items() if k[0] != Status.CONFIRMED}
    assert not not_confirmed, f"not all confirmed: {states}"
    with loop.database.session_scope() as s:
        everything = s.scalars(select(Dismissal)).all()
    # Duplicated or reordered callbacks never create a second dismissal of a group.
    assert Counter(d.source for d in everything) == {Source.API: len(ids)}
    stats = loop.stats()
    for api, figures in stats["apis"].items():
        assert figures["max_per_second"] <= 200, (api, figures["max_per_second"])
        assert "60007" not in figures["errors"], (api, figures["errors"])
    return states


def test_500_groups_of_every_type_with_duplicates_reorder_delays_drops_and_errors(loop_factory):
    loop = loop_factory(duplicate_rate=0.2, drop_rate=0.1, reorder=4, callback_delay_ms=30, error_rate=0.05)
    groups = loop.create_groups(500)
    assert sum(g.startswith("@TGS#_") for g in groups) == 100  # the Community groups
    ids = loop.dismiss(groups)
    rows = loop.wait_final(ids, timeout=60)
    states = assert_every_request_confirmed_once(loop, ids, rows)
    stats = loop.stats()
    # Dropped callbacks were recovered by the probe; the rest by their callback.
    assert stats["callbacks"]["dropped"] > 0 and stats["callbacks"]["duplicated"] > 0
    assert states[(Status.CONFIRMED, Confirmation.PROBE)] == stats["callbacks"]["dropped"]
    assert states[(Status.CONFIRMED, Confirmation.CALLBACK)] == 500 - stats["callbacks"]["dropped"]
    assert stats["apis"]["destroy_group"]["errors"].get("10002", 0) > 0  # retried through


def test_callbacks_that_arrive_before_the_rest_answer(loop_factory):
    loop = loop_factory(callback_first=True, duplicate_rate=0.3, error_rate=0.05)
    groups = loop.create_groups(150)
    ids = loop.dismiss(groups)
    rows = loop.wait_final(ids, timeout=60)
    states = assert_every_request_confirmed_once(loop, ids, rows)
    assert states == {(Status.CONFIRMED, Confirmation.CALLBACK): 150}
