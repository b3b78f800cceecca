"""Hostile requests to /v1 and the dashboard: never a 5xx, always the {code, status, message} shape."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import API_TOKEN

FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

segments = st.one_of(st.sampled_from(["dismissals", "batch", "groups", "members", "callbacks", "stats", "openapi.json",
                                      "docs", "..", ".", "%00", "%ff", "%2F", "a" * 300, "\u00e9", "01ABC"]),
                     st.text(min_size=1, max_size=12))
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
query_values = st.one_of(st.text(max_size=20), st.sampled_from(["-1", "0", "99999999999999999999", "1e9", "nan",
                                                                 "2026-13-45T99:99:99Z", "\x00", "%ff", "open",
                                                                 "queued", "api", "!!!", "30", "31", "0.5"]))
query_keys = st.sampled_from(["status", "group_id", "source", "since", "until", "limit", "cursor", "wait", "command",
                              "x", "token"])
json_bodies = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=20)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.sampled_from(["group_id", "group_ids", "reason",
                                                                                    "requested_by", "x"]),
                                                                   inner, max_size=4)), max_leaves=10)
bodies = st.one_of(st.none(), st.binary(max_size=100), json_bodies.map(lambda b: __import__("json").dumps(b).encode()),
                   st.just(b'{"group_ids": [' + b'"g",' * 10_001 + b'"g"]}'), st.just(b"\xff\xfe{"))
header_values = st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x", "", "\u00e9",
                                 "application/json; charset=latin-1"])


@st.composite
def requests_(draw):
    path = "/v1/" + "/".join(quote(s, safe="%.") for s in draw(st.lists(segments, min_size=0, max_size=4)))
    query = "&".join(f"{k}={quote(v, safe='%')}" for k, v in draw(st.lists(st.tuples(query_keys, query_values),
                                                                           max_size=4)))
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    if draw(st.booleans()):
        headers["Content-Type"] = draw(header_values)
    if draw(st.integers(0, 4)) == 0:
        headers["Idempotency-Key"] = draw(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=300).map(lambda s: s.encode("utf-8", "ignore")
                                                                    .decode("latin-1")))
    if draw(st.integers(0, 4)) == 0:
        headers["Accept"] = draw(st.sampled_from(["text/html", "*/*", "application/xml", "\u00e9"]))
    return draw(methods), path + (f"?{query}" if query else ""), headers, draw(bodies)


def assert_v1_error_shape(resp) -> None:
    assert resp.status_code < 500, resp.get_data()[:300]
    if resp.status_code >= 400:
        body = resp.get_json()
        assert set(body) <= {"code", "status", "message", "errors"}, body
        assert body["code"] == resp.status_code and body["status"] and body["message"]


@FUZZ
@given(req=requests_())
def test_v1_never_answers_5xx_and_errors_keep_their_shape(client, req):
    method, url, headers, body = req
    if "wait=" in url:  # long-polls: do not sleep through the fuzzing
        url = url.replace("wait=", "w=")
    resp = client.open(url, method=method, headers=headers, data=body)
    if method != "HEAD" and not url.startswith("/v1/docs"):
        assert_v1_error_shape(resp)
    else:
        assert resp.status_code < 500


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def test_nul_and_lone_surrogates_in_v1_input_are_refused_not_a_500(client):
    # JSON and URLs can carry NUL and unpaired surrogates; PostgreSQL text and UTF-8 cannot store them.
    for value in ("a\x00b", "\ud800"):
        for resp in (client.post("/v1/dismissals", json={"group_id": value}, headers=AUTH),
                     client.post("/v1/dismissals", json={"group_id": "g-ok", "reason": value}, headers=AUTH),
                     client.post("/v1/dismissals/batch", json={"group_ids": [value]}, headers=AUTH)):
            assert_v1_error_shape(resp)
    for url in ("/v1/groups/a%00b", "/v1/members/a%00b/dismissals", "/v1/dismissals/a%00b",
                "/v1/dismissals?group_id=a%00b", "/v1/callbacks?group_id=a%00b", "/v1/callbacks?command=%00",
                "/v1/dismissals?cursor=%00"):
        assert_v1_error_shape(client.get(url, headers=AUTH))
