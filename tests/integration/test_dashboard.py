"""`GET /`: the operators' dashboard, protected by the API tokens (cookie or bearer)."""

from __future__ import annotations

from sqlalchemy import update

from receiver.dismissals.service import request_dismissal
from receiver.models import Dismissal, Status, utcnow
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode


def test_without_a_token_the_dashboard_shows_a_sign_in_form(client):
    resp = client.get("/")
    assert resp.status_code == 401
    page = resp.get_data(as_text=True)
    assert '<form method="post" action="/">' in page and 'name="token"' in page
    assert 'id="dismissals"' not in page and 'id="counts"' not in page
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def test_token_in_the_url_becomes_an_httponly_strict_cookie(client):
    resp = client.get(f"/?token={API_TOKEN}")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"receiver_token={API_TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert client.get("/").status_code == 200  # the test client keeps the cookie
    assert client.post("/logout").status_code == 303
    assert client.get("/").status_code == 401


def test_bad_tokens_are_refused_everywhere(client):
    assert client.get("/?token=nope").status_code == 401
    assert "not valid" in client.post("/", data={"token": "nope"}).get_data(as_text=True)
    assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    client.set_cookie("receiver_token", "nope")
    assert client.get("/").status_code == 401


def test_form_sign_in_and_bearer_header(client):
    resp = client.post("/", data={"token": API_TOKEN})
    assert resp.status_code == 303 and "HttpOnly" in resp.headers["Set-Cookie"]
    other = client.application.test_client()
    assert other.get("/", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200


def test_without_configured_tokens_nobody_gets_in(app_factory, db):
    client = app_factory(db, api_tokens=()).test_client()
    resp = client.get("/?token=anything")
    assert resp.status_code == 401 and "API_TOKENS is not set" in resp.get_data(as_text=True)


def test_dashboard_shows_counts_latest_dismissals_and_latency(client, db):
    with db.session_scope() as s:
        ids = [request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id=f"g-dash-{i}").dismissal.id for i in range(3)]
        s.execute(update(Dismissal).where(Dismissal.id == ids[0]).values(status=Status.AWAITING_CALLBACK, sent_at=utcnow()))
        s.execute(update(Dismissal).where(Dismissal.id == ids[1]).values(
            status=Status.FAILED, last_error_code=10004, last_error_info="<b>bad</b> param"))
        s.commit()
    body = destroyed_body("g-dash-0", event_time=int(utcnow().timestamp() * 1000))
    assert client.post(f"/im/callback?{callback_query(TEST_SDKAPPID)}", data=encode(body),
                       content_type="application/json").status_code == 200
    page = client.get("/", headers={"Authorization": f"Bearer {API_TOKEN}"}).get_data(as_text=True)
    for dismissal_id in ids:
        assert f'data-dismissal-id="{dismissal_id}"' in page
    assert '<div class="card" data-status="confirmed"><div class="n">1</div>' in page
    assert '<div class="card" data-status="failed"><div class="n">1</div>' in page
    assert '<div class="card" data-status="queued"><div class="n">1</div>' in page
    assert "&lt;b&gt;bad&lt;/b&gt; param" in page  # escaped
    assert '<svg id="latency"' in page and "p50 <strong>" in page
    assert "<script" not in page


def test_the_dashboard_never_reads_raw_bodies(client, db):
    # Its 50 latest dismissals show their callbacks' fields; a body may be 1 MiB, and the page
    # refreshes every few seconds.
    from sqlalchemy import event

    body = destroyed_body("g-dash-raw", event_time=int(utcnow().timestamp() * 1000))
    assert client.post(f"/im/callback?{callback_query(TEST_SDKAPPID)}", data=encode(body),
                       content_type="application/json").status_code == 200
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        page = client.get("/", headers={"Authorization": f"Bearer {API_TOKEN}"}).get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert "g-dash-raw" in page
    assert any("FROM dismissals" in s for s in statements)
    assert not [s for s in statements if "raw_body" in s]
