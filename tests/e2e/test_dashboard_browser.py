"""The dashboard in headless Chromium: sign in with ?token=, follow the redirect, read the DOM."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import update

from receiver.dismissals.service import request_dismissal
from receiver.models import Dismissal, Status, utcnow
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is missing: install Debian's `chromium` package (.ci/run does) to run the browser test",
)


def chromium(url: str, profile, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=60,
    )


def test_dashboard_renders_real_dismissals_in_chromium(app_factory, committed_db, live_server_factory, tmp_path):
    with committed_db.session_scope() as s:
        ids = [request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id=f"browser-{i}").dismissal.id for i in range(6)]
        sent = utcnow() - timedelta(seconds=3)
        s.execute(update(Dismissal).where(Dismissal.id.in_(ids[:4])).values(status=Status.AWAITING_CALLBACK, sent_at=sent))
        s.execute(update(Dismissal).where(Dismissal.id == ids[4]).values(
            status=Status.FAILED, attempts=1, last_error_code=10004, last_error_info="invalid parameter"))
        s.commit()
    server = live_server_factory(app_factory(committed_db), threaded=True)
    for group in ("browser-0", "browser-1", "browser-2", "someone-elses-group"):
        body = destroyed_body(group, event_time=int(utcnow().timestamp() * 1000))
        resp = server.http.post(f"{server.url}/im/callback?{callback_query(TEST_SDKAPPID)}", data=encode(body),
                                headers={"Content-Type": "application/json"})
        assert resp.status_code == 200

    # Signed out: the browser sees the sign-in form, and no dismissal.
    out = chromium(f"{server.url}/", tmp_path / "anon", "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'name="token"' in out.stdout and "browser-0" not in out.stdout

    # ?token= sets the cookie and redirects to "/": the dashboard must render from the cookie alone.
    out = chromium(f"{server.url}/?token={API_TOKEN}", tmp_path / "signed-in", "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    for dismissal_id in ids:
        assert f'data-dismissal-id="{dismissal_id}"' in dom
    assert "someone-elses-group" in dom and "invalid parameter" in dom
    assert 'data-status="confirmed"><div class="n">4</div>' in dom  # 3 of ours + 1 external
    assert 'data-status="awaiting_callback"><div class="n">1</div>' in dom
    assert '<svg id="latency"' in dom and "<rect" in dom

    shot = tmp_path / "dashboard.png"
    out = chromium(f"{server.url}/?token={API_TOKEN}", tmp_path / "shot", f"--screenshot={shot}",
                   "--window-size=1280,1100", "--hide-scrollbars")
    assert out.returncode == 0 and shot.stat().st_size > 10_000
    keep = os.environ.get("DASHBOARD_SCREENSHOT")
    if keep:  # for a human look: DASHBOARD_SCREENSHOT=/tmp/dash.png pytest tests/e2e/test_dashboard_browser.py
        shutil.copy(shot, keep)
