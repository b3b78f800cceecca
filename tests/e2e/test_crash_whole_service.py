"""The whole service (web and worker) SIGKILLed mid-batch, then restarted: nothing lost, nothing sent twice needlessly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from receiver.config import Secret
from receiver.dismissals.service import request_batch
from receiver.im.client import IMRestClient
from receiver.im.ratelimit import build_rate_limiter
from receiver.models import FINAL_STATUSES, Callback, CallbackState, Confirmation, Dismissal, DismissalAttempt, Status
from tests.conftest import TEST_SDKAPPID
from tests.e2e.test_crash_web_worker import CALLBACK_TOKEN, ROOT, Web, free_port, service_env
from tests.fixtures.imsim import SIM_ADMIN, SIM_SECRET_KEY, client_config

N = 300
CONCURRENCY = 16  # the worker's DISPATCH_CONCURRENCY: it holds at most 2 × this many claims
CALLBACK_DELAY_MS = 6000

pytestmark = pytest.mark.slow


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def destroy_stats(sim_url: str) -> dict:
    stats = requests.get(f"{sim_url}/_sim/stats", timeout=5).json()
    return {"destroy": stats["apis"].get("destroy_group", {"calls": 0, "errors": {}}), "callbacks": stats["callbacks"],
            "groups": stats["groups"]}


def test_service_killed_mid_batch_then_restarted_finishes_every_dismissal(committed_db, imsim_factory, tmp_path):
    port = free_port()
    # IM does not retry after-event callbacks by default; with its retry option on, a callback that
    # met a dead service is sent again. The simulator's connection-refused retries play that part.
    # Callbacks come late (after the 5 s lease), so rows whose answer died with the worker are
    # retaken and re-sent before their callback can confirm them.
    sim = imsim_factory(callback_url=f"http://127.0.0.1:{port}/im/callback", callback_token=Secret(CALLBACK_TOKEN),
                        callback_retries=100, callback_retry_backoff=(0.2,), callback_timeout_seconds=10.0,
                        callback_delay_ms=CALLBACK_DELAY_MS)
    creator = IMRestClient(client_config(sim), limiter=build_rate_limiter(200, key_prefix=f"crash-{port}"))
    groups = [creator.create_group("Public", f"g{i}", owner="owner", group_id=f"whole-{i}", members=("a", "b"))
              for i in range(N)]
    creator.close()
    with committed_db.session_scope() as s:
        ids = [r.dismissal.id for r in request_batch(s, sdkappid=TEST_SDKAPPID, group_ids=groups)]

    env = service_env(committed_db.url, SPOOL_DIR=str(tmp_path / "spool"), PORT=str(port),
                      IM_SECRET_KEY=SIM_SECRET_KEY, IM_ADMIN_IDENTIFIER=SIM_ADMIN, IM_API_BASE=sim.url,
                      DISPATCH_LEASE_SECONDS="5", CONFIRM_TIMEOUT_SECONDS="3",
                      DISPATCH_CONCURRENCY=str(CONCURRENCY))
    web = Web(env, tmp_path / "web.log", port=port)
    worker = None
    try:
        web.wait_ready()
        worker = start_worker(env, tmp_path / "worker.log")
        deadline = time.monotonic() + 60
        while destroy_stats(sim.url)["destroy"]["calls"] < N // 3:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.02)
        # Power cut: web master, web workers and the dispatcher at once.
        worker.send_signal(signal.SIGKILL)
        web.sigkill_all()
        worker.wait(10)
        at_kill = destroy_stats(sim.url)["destroy"]["calls"]
        assert at_kill < N, "the batch finished before the kill; nothing was tested"

        web = Web(env, tmp_path / "web.log", port=port)
        worker = start_worker(env, tmp_path / "worker.log")
        web.wait_ready()
        deadline = time.monotonic() + 60
        while True:
            with committed_db.session_scope() as s:
                open_left = s.scalar(select(func.count()).select_from(Dismissal)
                                     .where(Dismissal.id.in_(ids), Dismissal.status.not_in(FINAL_STATUSES)))
            if open_left == 0:
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, f"{open_left} dismissals never became final"
            time.sleep(0.2)
        # Let callbacks still in the simulator's queue arrive before the service stops.
        deadline = time.monotonic() + CALLBACK_DELAY_MS / 1000 + 20
        while True:
            with committed_db.session_scope() as s:
                stored = s.scalar(select(func.count()).select_from(Callback)
                                  .where(Callback.state == CallbackState.ACCEPTED))
            if stored >= N or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        web.stop()

    sim_stats = destroy_stats(sim.url)
    calls, errors = sim_stats["destroy"]["calls"], sim_stats["destroy"]["errors"]
    with committed_db.session_scope() as s:
        rows = s.execute(select(Dismissal.id, Dismissal.status, Dismissal.confirmation, Dismissal.attempts,
                                Dismissal.callback_id).where(Dismissal.id.in_(ids))).all()
        recorded = s.execute(select(DismissalAttempt.dismissal_id, DismissalAttempt.error_code)
                             .where(DismissalAttempt.api == "destroy_group")).all()
        callbacks = s.execute(select(Callback.group_id, Callback.duplicates)
                              .where(Callback.state == CallbackState.ACCEPTED)).all()
        quarantined = s.scalar(select(func.count()).select_from(Callback)
                               .where(Callback.state == CallbackState.QUARANTINED))

    # Every dismissal is final, and confirmed: IM destroyed every group.
    assert sim_stats["groups"] == {"alive": 0, "destroyed": N}
    assert Counter(r.status for r in rows) == {Status.CONFIRMED: N}

    # destroy_group went out a second time only for rows whose first answer was never recorded.
    answers: dict[str, list[int]] = {}
    for dismissal_id, code in recorded:
        answers.setdefault(dismissal_id, []).append(code)
    by_id = {r.id: r for r in rows}
    assert all(len(codes) == 1 for codes in answers.values()), "a recorded answer was followed by a second call"
    unanswered = {i for i, r in by_id.items() if r.attempts > len(answers.get(i, []))}
    resent = {i for i, r in by_id.items() if r.attempts >= 2}
    assert resent <= unanswered
    assert all(r.attempts <= 2 for r in rows)
    gone = [i for i, codes in answers.items() if codes == [10010]]
    assert set(gone) <= resent  # every 10010 was the second call of a row whose first went through
    assert int(errors.get("10010", 0)) == len(gone)
    assert calls == N + len(gone)  # the only extra calls IM saw are those 10010s
    # Bounded by the claims one dispatcher held when it died (each counted its attempt).
    assert len(unanswered) <= 2 * CONCURRENCY

    # No callback lost: each destroyed group's callback stored once, and it confirmed its dismissal.
    assert sim_stats["callbacks"]["failed"] == 0 and sim_stats["callbacks"]["sent"] >= N
    assert sorted(g for g, _ in callbacks) == sorted(groups)
    assert all(r.callback_id is not None for r in rows)
    assert quarantined == 0
    confirmations = Counter(r.confirmation for r in rows)
    assert set(confirmations) <= {Confirmation.CALLBACK, Confirmation.PROBE, Confirmation.ALREADY_GONE}
    print(json.dumps({"n": N, "calls_at_kill": at_kill, "calls": calls, "resent": len(resent),
                      "unanswered_first_calls": len(unanswered), "gone_10010": len(gone),
                      "confirmations": {str(k.value): v for k, v in confirmations.items()},
                      "callbacks": sim_stats["callbacks"],
                      "duplicates_stored_once": sum(d for _, d in callbacks)}))
