"""Logs: one structured line per event, a request id on each, and never a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from receiver.config import Secret
from receiver.logs import JSONFormatter, RequestIdFilter, TextFormatter
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.fixtures.imsim import SIM_SECRET_KEY
from tests.helpers import callback_query, destroyed_body, encode

CALLBACK_TOKEN = "cb-token-do-not-log-7f3a"


@pytest.fixture
def captured():
    """Every record at DEBUG, formatted by both of our formatters (as production would)."""
    json_out, text_out = io.StringIO(), io.StringIO()
    handlers = []
    for stream, formatter in ((json_out, JSONFormatter()), (text_out, TextFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        handlers.append(handler)
    root = logging.getLogger()
    old_level = root.level
    yield json_out, text_out, handlers
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(old_level)


def attach(handlers):
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)


def test_no_secret_reaches_the_logs(app_factory, db, captured, imsim, im_client_factory):
    json_out, text_out, handlers = captured
    app = app_factory(db, im_callback_tokens=(Secret(CALLBACK_TOKEN),), metrics_public=False,
                      im_secret_key=Secret(SIM_SECRET_KEY))
    attach(handlers)  # after create_app, which resets the root logger's level
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}

    query = callback_query(TEST_SDKAPPID, token=CALLBACK_TOKEN)
    sign = dict(p.split("=", 1) for p in query.split("&"))["Sign"]
    assert client.post(f"/im/callback?{query}", data=encode(destroyed_body("g-log")),
                       content_type="application/json").status_code == 200
    bad = query.replace(sign, "0" * 64)
    assert client.post(f"/im/callback?{bad}", data=b"{}", content_type="application/json").status_code == 401
    assert client.post(f"/im/callback?{query}", data=b"{broken", content_type="application/json").status_code == 400
    assert client.post("/v1/dismissals", json={"group_id": "g-api"}, headers=bearer).status_code == 202
    assert client.get("/v1/dismissals", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    assert client.get("/metrics", headers=bearer).status_code == 200
    assert client.get(f"/?token={API_TOKEN}").status_code == 303
    assert client.post("/", data={"token": API_TOKEN}).status_code == 303

    im = im_client_factory(imsim)
    im.get_group_info(["no-such-group"])  # urllib3 logs the request line, UserSig in the URL
    usersig = im.signer.current()

    logged = json_out.getvalue() + text_out.getvalue()
    assert "/im/callback" in logged and "usersig=***" in logged  # we did capture the traffic, masked
    for secret in (API_TOKEN, CALLBACK_TOKEN, sign, SIM_SECRET_KEY, usersig, usersig[:40]):
        assert secret not in logged


def test_each_request_logs_one_json_line_with_its_request_id(app_factory, db, captured):
    json_out, _, handlers = captured
    client = app_factory(db, log_format="json").test_client()
    attach(handlers)

    given = client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc"})
    assert given.headers["X-Request-ID"] == "lb-1234.abc"
    junk = client.post(f"/im/callback?{callback_query(TEST_SDKAPPID)}", data=encode(destroyed_body("g-rid")),
                       content_type="application/json", headers={"X-Request-ID": "bad id\u00e9<script>" * 3})
    generated = junk.headers["X-Request-ID"]
    assert len(generated) == 32 and "<" not in generated

    lines = [json.loads(line) for line in json_out.getvalue().splitlines()]
    by_id = {}
    for line in lines:
        by_id.setdefault(line.get("request_id"), []).append(line)
    assert [entry["event"] for entry in by_id["lb-1234.abc"]] == ["GET /healthz 200"]
    events = [entry["event"] for entry in by_id[generated]]
    assert events == ["POST /im/callback 200 stored"]  # one line per callback, its outcome on it
    access = by_id[generated][-1]
    assert access["status"] == 200 and access["path"] == "/im/callback" and access["duration_ms"] >= 0
    assert access["outcome"] == "stored" and len(access["callback_id"]) == 26 and access["matched_request"] is False
    assert access["level"] == "info" and access["ts"].endswith("Z")


def test_request_id_is_gone_after_the_request(app_factory, db, captured):
    json_out, _, handlers = captured
    client = app_factory(db).test_client()
    attach(handlers)
    client.get("/healthz")
    logging.getLogger("receiver.test").info("outside any request")
    last = json.loads(json_out.getvalue().splitlines()[-1])
    assert last["event"] == "outside any request" and "request_id" not in last
