"""Every /v1 route and the dashboard refuse bad credentials; tokens compared in constant time; no echo of secrets."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from receiver.api.auth import check_token
from receiver.callbacks.verify import check_sign
from receiver.config import Secret
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode

CALLBACK_TOKEN = "auth-test-callback-token"
BAD_HEADERS = {
    "missing": None,
    "empty": "",
    "scheme only": "Bearer",
    "scheme and space": "Bearer ",
    "wrong token": "Bearer wrong-token",
    "token plus suffix": f"Bearer {API_TOKEN}x",
    "token prefix": f"Bearer {API_TOKEN[:-1]}",
    "other scheme": f"Basic {API_TOKEN}",
    "no scheme": API_TOKEN,
    "token then junk": f"Bearer {API_TOKEN} extra",
    "doubled": f"Bearer {API_TOKEN}, Bearer {API_TOKEN}",
    "non-ascii": "Bearer t\u00f6ken",
}


def v1_requests(app) -> list[tuple[str, str]]:
    """(method, url) for every /v1 rule in the URL map, placeholders filled in."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1"):
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<{arg}>", "x").replace(f"<string:{arg}>", "x").replace(f"<path:{arg}>", "x")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, url))
    return found


def test_the_url_map_has_the_documented_v1_routes(app):
    paths = {url for _, url in v1_requests(app)}
    assert {"/v1/dismissals", "/v1/dismissals/batch", "/v1/dismissals/x", "/v1/groups/x",
            "/v1/members/x/dismissals", "/v1/callbacks", "/v1/stats", "/v1/openapi.json"} <= paths


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_every_v1_route_and_method_refuses_bad_credentials(app, client, case):
    header = BAD_HEADERS[case]
    headers = {} if header is None else {"Authorization": header}
    for method, url in v1_requests(app):
        resp = client.open(url, method=method, headers=headers, json={"group_id": "g", "group_ids": ["g"]})
        assert resp.status_code == 401, (method, url, resp.status_code)
        body = resp.get_json()
        assert set(body) <= {"code", "status", "message", "errors"} and body["code"] == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert API_TOKEN not in resp.get_data(as_text=True)
    assert client.get("/v1/stats", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_the_dashboard_refuses_bad_credentials(client, case):
    header = BAD_HEADERS[case]
    headers = {} if header is None else {"Authorization": header}
    resp = client.get("/", headers=headers)
    assert resp.status_code == 401 and b"<form" in resp.data
    assert API_TOKEN not in resp.get_data(as_text=True)


@pytest.mark.parametrize("token", ["", " ", "wrong", API_TOKEN + "x", API_TOKEN.upper(), API_TOKEN + "\x00"])
def test_the_dashboard_refuses_bad_tokens_in_url_form_and_cookie(client, token):
    assert client.get("/", query_string={"token": token}).status_code == 401
    assert client.post("/", data={"token": token}).status_code == 401
    client.set_cookie("receiver_token", token)
    resp = client.get("/")
    assert resp.status_code == 401 and "receiver_token=" not in resp.headers.get("Set-Cookie", "")
    client.delete_cookie("receiver_token")


def test_private_metrics_refuse_bad_credentials(app_factory, db):
    client = app_factory(db, metrics_public=False).test_client()
    for header in BAD_HEADERS.values():
        assert client.get("/metrics", headers={} if header is None else {"Authorization": header}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200


def test_api_tokens_are_compared_in_constant_time_against_every_token(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tokens = (Secret("first-token"), Secret("second-token"), Secret("third-token"))
    check_token("first-token", tokens)  # matches the first: still compared with all three (no early exit)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Exception):
        check_token("nope", tokens)
    assert len(calls) == 3


def test_callback_signs_are_compared_in_constant_time_against_every_token(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    now = str(int(time.time()))
    sign = hashlib.sha256(("new" + now).encode()).hexdigest()
    check_sign(sign, now, (Secret("new"), Secret("old")), now=time.time(), max_skew_seconds=60)
    assert len(calls) == 2


def test_secrets_never_come_back_in_answers(app_factory, db):
    # The logs are covered by tests/integration/test_ops_logs.py; this covers what clients see.
    app = app_factory(db, im_callback_tokens=(Secret(CALLBACK_TOKEN),), metrics_public=False)
    client = app.test_client()
    query = callback_query(TEST_SDKAPPID, token=CALLBACK_TOKEN)
    sign = dict(p.split("=", 1) for p in query.split("&"))["Sign"]
    answers = [
        client.post(f"/im/callback?{query}", data=encode(destroyed_body("g-s1")), content_type="application/json"),
        client.post(f"/im/callback?{query}", data=b"{broken", content_type="application/json"),
        client.post(f"/im/callback?{query.replace(sign, sign[::-1])}", data=b"{}", content_type="application/json"),
        client.post(f"/im/callback?{query}&Sign={sign}", data=b"[]", content_type="application/json"),
        client.get("/v1/stats", headers={"Authorization": f"Bearer {API_TOKEN}x"}),
        client.get("/v1/stats", headers={"Authorization": f"Basic {API_TOKEN}"}),
        client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}x"}),
        client.get("/", query_string={"token": API_TOKEN + "x"}),
        client.post("/", data={"token": API_TOKEN + "x"}),
    ]
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    answers += [client.get("/v1/callbacks?limit=50", headers=auth), client.get("/", headers=auth),
                client.get("/v1/openapi.json", headers=auth)]
    for resp in answers:
        seen = resp.get_data(as_text=True) + "".join(f"{k}: {v}\n" for k, v in resp.headers.items()
                                                      if k != "Set-Cookie")
        for secret in (API_TOKEN, CALLBACK_TOKEN, sign, sign[::-1]):
            assert secret not in seen, (resp.request.path, secret)
    # The stored quarantined requests keep their query string, but without Sign.
    stored = client.get("/v1/callbacks?limit=50", headers=auth).get_json()["items"]
    assert stored and all("Sign=" not in (item.get("query_string") or "") for item in stored)
