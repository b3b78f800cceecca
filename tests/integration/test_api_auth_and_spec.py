"""Every /v1 request needs a bearer token; errors share one shape; the OpenAPI document is valid."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from receiver.config import Secret
from tests.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ROUTES = ["/v1/dismissals", "/v1/dismissals/01ABC", "/v1/groups/g", "/v1/members/a/dismissals", "/v1/callbacks",
          "/v1/stats", "/v1/openapi.json", "/v1/docs", "/v1/no-such-thing", "/v1"]


def assert_error(resp, code):
    assert resp.status_code == code
    body = resp.get_json()
    assert set(body) <= {"code", "status", "message", "errors"} and body["code"] == code
    assert body["status"] and body["message"]
    return body


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-token", f"Basic {API_TOKEN}", f"Bearer {API_TOKEN}x"])
def test_every_v1_route_refuses_a_missing_or_wrong_token(client, path, header):
    headers = {"Authorization": header} if header is not None else {}
    body = assert_error(client.get(path, headers=headers), 401)
    assert API_TOKEN not in body["message"]


def test_401_names_the_scheme(client):
    resp = client.post("/v1/dismissals", json={"group_id": "g"})
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_without_api_tokens_every_request_is_refused_saying_so(app_factory, db):
    client = app_factory(db, api_tokens=()).test_client()
    body = assert_error(client.get("/v1/stats", headers=AUTH), 401)
    assert "API_TOKENS is not set" in body["message"]


def test_any_configured_token_is_accepted_and_the_scheme_is_case_insensitive(app_factory, db):
    client = app_factory(db, api_tokens=(Secret("old-token"), Secret("new-token"))).test_client()
    for header in ("Bearer old-token", "Bearer new-token", "bearer new-token"):
        assert client.get("/v1/stats", headers={"Authorization": header}).status_code == 200


def test_routes_outside_v1_need_no_token(client):
    assert client.get("/healthz").status_code == 200


def test_unknown_route_and_method_use_our_shape(client):
    assert_error(client.get("/v1/no-such-thing", headers=AUTH), 404)
    resp = client.delete("/v1/dismissals", headers=AUTH)
    assert_error(resp, 405)
    assert "POST" in resp.headers["Allow"]
    assert_error(client.put("/v1/stats", headers=AUTH), 405)


def test_openapi_document_is_valid_and_documents_auth_and_errors(client):
    spec = client.get("/v1/openapi.json", headers=AUTH).get_json()
    validate(spec)
    assert spec["info"]["title"] == "im-dismissal-receiver"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearerAuth": []}]
    assert set(spec["components"]["schemas"]["Error"]["properties"]) == {"code", "status", "message", "errors"}
    paths = spec["paths"]
    assert set(paths) == {"/v1/dismissals", "/v1/dismissals/batch", "/v1/dismissals/{dismissal_id}",
                          "/v1/stats", "/v1/groups/{group_id}", "/v1/members/{account}/dismissals", "/v1/callbacks"}
    for path, operations in paths.items():
        for method, op in operations.items():
            if method == "parameters":
                assert all(p.get("description") for p in op), path
                continue
            assert all(p.get("description") for p in op.get("parameters", ())), (method, path)
            assert "401" in op["responses"], (method, path)
            assert op["summary"], (method, path)
    assert {"200", "202", "400", "413", "422"} <= set(paths["/v1/dismissals"]["post"]["responses"])
    assert "404" in paths["/v1/dismissals/{dismissal_id}"]["get"]["responses"]
    params = {p["name"] for p in paths["/v1/dismissals"]["get"]["parameters"]}
    assert params == {"status", "group_id", "source", "since", "until", "limit", "cursor"}


def test_docs_page_is_served(client):
    resp = client.get("/v1/docs", headers=AUTH)
    assert resp.status_code == 200 and b"swagger-ui" in resp.data


def test_a_dashboard_session_may_read_the_docs_but_not_call_the_api(client):
    from receiver.dashboard import COOKIE

    assert client.get("/v1/openapi.json").status_code == 401
    client.set_cookie(COOKIE, API_TOKEN)
    assert client.get("/v1/openapi.json").status_code == 200
    assert client.get("/v1/docs").status_code == 200
    assert client.get("/v1/dismissals").status_code == 401
    assert client.post("/v1/dismissals", json={"group_id": "g"}).status_code == 401
    client.set_cookie(COOKIE, "wrong")
    assert client.get("/v1/openapi.json").status_code == 401
