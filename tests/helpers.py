"""Builders for callback requests used across the test suite."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import urlencode

GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"


def destroyed_body(group_id: str = "@TGS#2J4SZEAEL", *, event_time=1670574414123, members=("leckie", "peter", "bob"),
                   group_type: str = "Public", owner: str | None = "leckie", name: str | None = "MyFirstGroup", **extra) -> dict:
    body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": group_id, "Type": group_type}
    if owner is not None:
        body["Owner_Account"] = owner
    if name is not None:
        body["Name"] = name
    if members is not None:
        body["MemberList"] = [{"Member_Account": m} for m in members]
    if event_time is not None:
        body["EventTime"] = event_time
    body.update(extra)
    return body


def callback_query(sdkappid: int, command: str = GROUP_DESTROYED, *, token: str | None = None,
                   request_time: int | None = None, sign: str | None = None, **extra) -> str:
    params = {"SdkAppid": str(sdkappid), "CallbackCommand": command, "contenttype": "json",
              "ClientIP": "127.0.0.1", "OptPlatform": "RESTAPI"}
    if token is not None:
        rt = str(int(time.time()) if request_time is None else request_time)
        params["RequestTime"] = rt
        params["Sign"] = sign if sign is not None else hashlib.sha256((token + rt).encode()).hexdigest()
    params.update({k: v for k, v in extra.items() if v is not None})
    return urlencode(params)


def encode(body) -> bytes:
    return json.dumps(body).encode()
