"""`/v1/groups`, `/v1/members/…/dismissals` and `/v1/callbacks`, fed by real callbacks."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from receiver.models import Dismissal, Source, Status, utcnow
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import GROUP_DESTROYED, callback_query, destroyed_body, encode

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def deliver(client, body, query=None):
    data = body if isinstance(body, bytes) else encode(body)
    resp = client.post(f"/im/callback?{query or callback_query(TEST_SDKAPPID)}", data=data,
                       headers={"Content-Type": "application/json"})
    time.sleep(0.002)  # ids are ULIDs: ordered across milliseconds
    return resp


def get(client, path):
    resp = client.get(path, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_group_shows_dismissals_and_members_of_the_latest_callback(client, db):
    with db.session_scope() as s:
        s.add(Dismissal(group_id="@TGS#G1", sdkappid=TEST_SDKAPPID, source=Source.API,
                        status=Status.AWAITING_CALLBACK, requested_at=utcnow(), sent_at=utcnow(), attempts=1))
    deliver(client, destroyed_body("@TGS#G1", event_time=int(time.time() * 1000), members=("ann", "bob")))
    deliver(client, destroyed_body("@TGS#G1", event_time=int(time.time() * 1000) + 5000, members=("cy",),
                                   name=None, owner=None))
    group = get(client, f"/v1/groups/{quote('@TGS#G1', safe='')}")
    assert group["group_id"] == "@TGS#G1"
    assert group["members"] == ["cy"]
    newest, ours = group["dismissals"]
    assert (newest["source"], ours["source"], ours["status"], ours["confirmation"]) == \
        ("external", "api", "confirmed", "callback")
    cb = ours["callback"]
    assert list(cb) == ["event_time", "group_type", "owner_account", "name", "member_count", "opt_platform",
                        "received_at"]
    assert (cb["group_type"], cb["owner_account"], cb["name"], cb["member_count"], cb["opt_platform"]) == \
        ("Public", "leckie", "MyFirstGroup", 2, "RESTAPI")
    assert cb["event_time"].endswith("Z") and cb["received_at"].endswith("Z")
    assert newest["callback"]["owner_account"] is None and newest["callback"]["name"] is None


def test_group_ids_and_accounts_holding_a_slash_can_be_looked_up(client):
    # Custom group IDs (and accounts) are any printable ASCII: "/" included, sent as %2F.
    assert client.post("/v1/dismissals", json={"group_id": "team/a"}, headers=AUTH).status_code == 202
    deliver(client, destroyed_body("room/7", event_time=int(time.time() * 1000), members=("x/y", "z")))
    assert get(client, f"/v1/groups/{quote('team/a', safe='')}")["dismissals"][0]["group_id"] == "team/a"
    assert get(client, f"/v1/groups/{quote('room/7', safe='')}")["members"] == ["x/y", "z"]
    items = get(client, f"/v1/members/{quote('x/y', safe='')}/dismissals")["items"]
    assert [d["group_id"] for d in items] == ["room/7"]


def test_group_without_callback_has_no_members_and_unknown_group_is_404(client):
    client.post("/v1/dismissals", json={"group_id": "quiet"}, headers=AUTH)
    group = get(client, "/v1/groups/quiet")
    assert group["members"] == [] and len(group["dismissals"]) == 1
    resp = client.get("/v1/groups/never-seen", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["code"] == 404


def test_member_dismissals_page_through_the_groups_an_account_was_in(client):
    for i in range(5):
        deliver(client, destroyed_body(f"m{i}", members=("shared", f"only{i}")))
    first = get(client, "/v1/members/shared/dismissals?limit=2")
    second = get(client, f"/v1/members/shared/dismissals?limit=2&cursor={first['next_cursor']}")
    third = get(client, f"/v1/members/shared/dismissals?limit=2&cursor={second['next_cursor']}")
    groups = [d["group_id"] for page in (first, second, third) for d in page["items"]]
    assert groups == ["m4", "m3", "m2", "m1", "m0"] and third["next_cursor"] is None
    assert [d["group_id"] for d in get(client, "/v1/members/only3/dismissals")["items"]] == ["m3"]
    assert get(client, "/v1/members/nobody/dismissals") == {"items": [], "next_cursor": None}
    assert client.get("/v1/members/shared/dismissals?limit=0", headers=AUTH).status_code == 422


def test_callbacks_list_accepted_and_quarantined_with_reason_and_filters(client):
    deliver(client, destroyed_body("c1"))
    deliver(client, b"{broken")
    deliver(client, b"\xff" * 10_000)
    deliver(client, destroyed_body("c2"))
    items = get(client, "/v1/callbacks")["items"]
    assert [i["state"] for i in items] == ["accepted", "quarantined", "quarantined", "accepted"]
    accepted = items[0]
    assert (accepted["group_id"], accepted["command"], accepted["member_count"]) == ("c2", GROUP_DESTROYED, 3)
    assert accepted["dismissal_id"] is not None and accepted["quarantine_reason"] is None
    assert '"GroupId": "c2"' in accepted["raw_body"] and not accepted["raw_body_truncated"]
    assert "Sign=" not in accepted["query_string"]
    big, broken = items[1], items[2]
    assert "UTF-8" in big["quarantine_reason"] and "malformed JSON" in broken["quarantine_reason"]
    assert broken["raw_body"] == "{broken" and broken["dismissal_id"] is None
    assert big["raw_body_size"] == 10_000 and big["raw_body_truncated"] and big["raw_body"] == "\ufffd" * 4096

    def groups(query):
        return [i["group_id"] for i in get(client, f"/v1/callbacks?{query}")["items"]]

    assert groups("state=accepted") == ["c2", "c1"]
    assert groups("group_id=c1") == ["c1"]
    assert groups(f"command={GROUP_DESTROYED}") == ["c2", None, None, "c1"]
    assert groups("command=Group.CallbackBeforeSendMsg") == []
    assert groups("since=2999-01-01T00:00:00Z") == []
    assert len(groups("since=2000-01-01T00:00:00.5%2B01:00&until=2999-01-01T00:00:00Z")) == 4
    page = get(client, "/v1/callbacks?limit=3")
    rest = get(client, f"/v1/callbacks?limit=3&cursor={page['next_cursor']}")
    assert [i["id"] for i in page["items"] + rest["items"]] == [i["id"] for i in items]


@pytest.mark.parametrize("query", ["state=broken", "limit=1001", "since=now", "cursor=xyz", "sort=asc"])
def test_callbacks_refuse_bad_parameters(client, query):
    resp = client.get(f"/v1/callbacks?{query}", headers=AUTH)
    assert resp.status_code == 422 and resp.get_json()["errors"]["query"]
