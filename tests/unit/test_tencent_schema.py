"""The dismissed-group callback schema: lenient where Tencent varies, strict where a body is broken."""

import pytest
from marshmallow import ValidationError

from receiver.schemas.tencent import MAX_EVENT_TIME_MS, GroupDestroyedSchema, describe_errors, event_time_from_ms
from tests.helpers import destroyed_body

schema = GroupDestroyedSchema()


def test_documented_sample_with_string_event_time():
    data = schema.load(destroyed_body(event_time="1670574414123"))
    assert data["event_time_ms"] == 1670574414123
    assert [m["account"] for m in data["members"]] == ["leckie", "peter", "bob"]
    assert event_time_from_ms(data["event_time_ms"]).isoformat() == "2022-12-09T08:26:54.123000+00:00"


@pytest.mark.parametrize("ms", [0, 1670574414123, 9856274759874, MAX_EVENT_TIME_MS])
def test_event_times_keep_their_millisecond(ms):
    # Through a float (ms / 1000) 9856274759874 came out at …59.874001 and the last one at …59.998993.
    moment = event_time_from_ms(ms)
    assert moment.microsecond == ms % 1000 * 1000
    assert int(moment.timestamp()) == ms // 1000


def test_the_latest_event_time_accepted_is_the_last_millisecond_of_9999_12_30():
    assert schema.load(destroyed_body(event_time=MAX_EVENT_TIME_MS))["event_time_ms"] == MAX_EVENT_TIME_MS
    assert event_time_from_ms(MAX_EVENT_TIME_MS).isoformat() == "9999-12-30T23:59:59.999000+00:00"
    with pytest.raises(ValidationError, match="EventTime"):
        schema.load(destroyed_body(event_time=MAX_EVENT_TIME_MS + 1))


def test_numeric_event_time():
    assert schema.load(destroyed_body(event_time=1670574414123))["event_time_ms"] == 1670574414123


def test_community_without_member_list_and_without_event_time():
    data = schema.load(destroyed_body("@TGS#_@TGS#cQVLVHIM62CJ", group_type="Community", members=None, event_time=None))
    assert "members" not in data and "event_time_ms" not in data


def test_unknown_fields_are_ignored_not_rejected():
    data = schema.load(destroyed_body(Operator_Account="admin", Future={"x": 1},
                                      MemberList=[{"Member_Account": "a", "Role": "Owner"}]))
    assert data["members"] == [{"account": "a"}]


def test_owner_and_name_may_be_absent_or_null():
    data = schema.load(destroyed_body(owner=None, name=None, Owner_Account=None))
    assert data["owner_account"] is None


@pytest.mark.parametrize("change,field", [
    ({"GroupId": 123}, "GroupId"),
    ({"GroupId": ""}, "GroupId"),
    ({"Type": None}, "Type"),
    ({"EventTime": "12x"}, "EventTime"),
    ({"EventTime": "²"}, "EventTime"),  # a digit to str.isdigit, not to int()
    ({"EventTime": "١٦٧٠٥٧٤٤١٤١٢٣"}, "EventTime"),  # Arabic-Indic digits
    ({"EventTime": True}, "EventTime"),
    ({"EventTime": -5}, "EventTime"),
    ({"EventTime": 1.5}, "EventTime"),
    ({"MemberList": "bob"}, "MemberList"),
    ({"MemberList": [{"Member_Account": 7}]}, "MemberList"),
    ({"MemberList": [{}]}, "MemberList"),
    ({"MemberList": [{"Member_Account": None}]}, "MemberList.0.Member_Account: Field may not be null"),
    ({"MemberList": [{"Member_Account": ""}]}, "MemberList.0.Member_Account: Length"),
    ({"MemberList": [{"Member_Account": "a"}, {"Member_Account": "x" * 129}]}, "MemberList.1.Member_Account: Length"),
    ({"MemberList": [{"Member_Account": "a"}, "b"]}, "MemberList.1._schema: Invalid input type"),
    ({"MemberList": {"Member_Account": "a"}}, "MemberList: Not a valid list"),
    ({"MemberList": [None]}, "MemberList.0: Field may not be null"),
])
def test_broken_bodies_are_rejected_naming_the_field(change, field):
    body = destroyed_body()
    body.update(change)
    with pytest.raises(ValidationError) as exc:
        schema.load(body)
    assert field in describe_errors(exc.value)


def test_missing_group_id_is_rejected():
    body = destroyed_body()
    del body["GroupId"]
    with pytest.raises(ValidationError) as exc:
        schema.load(body)
    assert "GroupId: Missing data" in describe_errors(exc.value)
