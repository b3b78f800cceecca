"""`GET /metrics` after real callbacks: counters, database gauges, auth, and multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from receiver.dismissals.service import request_dismissal
from receiver.dismissals.worker import TimedLimiter
from receiver.metrics import Metrics
from receiver.models import Dismissal, Status, utcnow
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def now_ms() -> int:
    return int(utcnow().timestamp() * 1000)


def post_callback(client, body, query=None):
    data = body if isinstance(body, bytes) else encode(body)
    return client.post(f"/im/callback?{query or callback_query(TEST_SDKAPPID)}", data=data,
                       content_type="application/json")


def test_metrics_count_real_callbacks_and_read_the_database(client, db):
    with db.session_scope() as s:
        ours = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="g-ours").dismissal.id
        waiting = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="g-waiting").dismissal.id
        request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="g-queued")
        s.execute(update(Dismissal).where(Dismissal.id.in_([ours, waiting]))
                  .values(status=Status.AWAITING_CALLBACK, sent_at=utcnow() - timedelta(seconds=300)))
        s.commit()

    event = now_ms()
    assert post_callback(client, destroyed_body("g-ours", event_time=event)).status_code == 200  # confirms ours
    assert post_callback(client, destroyed_body("g-ours", event_time=event)).status_code == 200  # duplicate
    assert post_callback(client, destroyed_body("g-external")).status_code == 200                # external
    assert post_callback(client, b"{not json").status_code == 400                    # quarantined
    assert post_callback(client, {}, callback_query(TEST_SDKAPPID + 1)).status_code == 403
    assert post_callback(client, {}, callback_query(TEST_SDKAPPID, "Group.CallbackBeforeCreateGroup")).status_code == 200

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain; version=0.0.4")
    found = samples(resp.get_data(as_text=True))
    cmd = "Group.CallbackAfterGroupDestroyed"
    assert value(found, "receiver_callbacks_total", command=cmd, outcome="stored") == 2
    assert value(found, "receiver_callbacks_total", command=cmd, outcome="duplicate") == 1
    assert value(found, "receiver_callbacks_total", command=cmd, outcome="quarantined") == 1
    assert value(found, "receiver_callbacks_total", command=cmd, outcome="rejected_sdkappid_mismatch") == 1
    assert value(found, "receiver_callbacks_total", command="other", outcome="ignored") == 1
    assert value(found, "receiver_callback_seconds_count", outcome="stored") == 2
    assert value(found, "receiver_dismissals", status="confirmed", source="api") == 1
    assert value(found, "receiver_dismissals", status="confirmed", source="external") == 1
    assert value(found, "receiver_dismissals", status="awaiting_callback", source="api") == 1
    assert value(found, "receiver_dismissals", status="queued", source="api") == 1
    assert value(found, "receiver_dismissals", status="failed", source="api") == 0
    assert value(found, "receiver_stored_callbacks", state="accepted") == 2
    assert value(found, "receiver_stored_callbacks", state="quarantined") == 1
    assert 299 <= value(found, "receiver_oldest_awaiting_callback_seconds") < 400
    assert value(found, "receiver_database_up") == 1
    assert value(found, "receiver_http_requests_total", endpoint="/im/callback", status="200") == 4
    # Every metric the README lists is present (IM calls appear once a worker in the same
    # multiprocess directory has made some; their families are always declared).
    for name in ("receiver_im_calls", "receiver_im_call_seconds", "receiver_ratelimit_wait_seconds",
                 "receiver_reconciler_probes", "receiver_dismissal_transitions"):
        assert f"# TYPE {name}" in resp.get_data(as_text=True)


def test_oldest_awaiting_is_zero_without_waiting_dismissals(client):
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert value(found, "receiver_oldest_awaiting_callback_seconds") == 0
    assert value(found, "receiver_dismissals", status="queued", source="api") == 0


def test_metrics_need_a_token_when_not_public(app_factory, db):
    client = app_factory(db, metrics_public=False).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert resp.status_code == 200 and b"receiver_dismissals" in resp.data


def test_scrape_survives_an_unreadable_database(app_factory, tmp_path):
    from receiver.db import Database

    unmigrated = Database(f"sqlite:///{tmp_path}/empty.db")  # no tables: every query fails
    resp = app_factory(unmigrated).test_client().get("/metrics")
    unmigrated.dispose()
    assert resp.status_code == 200
    found = samples(resp.get_data(as_text=True))
    assert value(found, "receiver_database_up") == 0
    assert value(found, "receiver_callbacks_total", command="other", outcome="ignored") == 0


def test_rate_limiter_waits_are_observed():
    class Slow:
        def acquire(self, api):
            return 0.02

    metrics = Metrics()
    limiter = TimedLimiter(Slow(), metrics)
    assert limiter.acquire("destroy_group") == 0.02
    assert metrics.registry.get_sample_value("receiver_ratelimit_wait_seconds_count", {"api": "destroy_group"}) == 1
    assert metrics.registry.get_sample_value("receiver_ratelimit_wait_seconds_sum", {"api": "destroy_group"}) == 0.02


MULTIPROCESS_SCRIPT = textwrap.dedent("""
    import subprocess, sys
    from receiver.metrics import Metrics
    # Two other processes (think: the worker and a second gunicorn worker) count IM calls.
    child = "from receiver.metrics import Metrics; m = Metrics(); m.im_calls.labels(api='destroy_group', error_code='0').inc(3)"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", child], check=True)
    from receiver import create_app, migrate
    from receiver.config import Config, Secret
    url = sys.argv[1]
    migrate.upgrade(url)
    app = create_app(Config(database_url=url, api_tokens=(Secret("t"),), prometheus_multiproc_dir=sys.argv[2]))
    app.extensions["receiver.metrics"].callbacks.labels(command="other", outcome="ignored").inc()
    sys.stdout.write(app.test_client().get("/metrics").get_data(as_text=True))
""")


def test_multiprocess_mode_merges_every_process(tmp_path):
    mp = tmp_path / "prom"
    mp.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp)}
    out = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRIPT, f"sqlite:///{tmp_path}/mp.db", str(mp)],
                         env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = samples(out.stdout)
    assert value(found, "receiver_im_calls_total", api="destroy_group", error_code="0") == 6
    assert value(found, "receiver_callbacks_total", command="other", outcome="ignored") == 1
    assert value(found, "receiver_database_up") == 1
