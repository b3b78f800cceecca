"""The simulator's REST logic: request checks and the three group APIs, free of Flask."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from receiver.im.usersig import UserSigError, decode, verify
from receiver.imsim.callbacks import COMMAND, CallbackSender
from receiver.imsim.config import SimConfig
from receiver.imsim.state import GROUP_TYPES, SimGroup, SimState
from receiver.textsafety import is_decimal

APIS = ("create_group", "get_group_info", "destroy_group")
MAX_GROUPS_PER_INFO = 50
MAX_GROUP_ID_BYTES = 48


class SimError(Exception):
    def __init__(self, code: int, info: str) -> None:
        super().__init__(info)
        self.code = code
        self.info = info


@dataclass
class Sim:
    config: SimConfig
    state: SimState
    sender: CallbackSender


def handle(sim: Sim, command: str, query: Mapping[str, str], raw_body: bytes, received_at: float) -> dict[str, Any]:
    """Answer one REST call the way Tencent IM would, as the JSON document to send back."""
    if command not in APIS:
        return _answer(10003, f"invalid command: {command}")
    seen = sim.state.count_call(command, received_at)
    try:
        if seen > sim.config.rate_limit:
            raise SimError(60007, "REST API call frequency exceeds limit")
        _check_query(sim, query)
        body = _parse_body(raw_body)
        if sim.state.chance(sim.config.error_rate):
            raise SimError(10002, "internal server error, please retry")
        result = _APIS[command](sim, body)
    except SimError as err:
        sim.state.count_error(command, err.code)
        return _answer(err.code, err.info)
    return {**_answer(0, ""), **result}


def _answer(code: int, info: str) -> dict[str, Any]:
    return {"ActionStatus": "OK" if code == 0 else "FAIL", "ErrorCode": code, "ErrorInfo": info}


def _check_query(sim: Sim, query: Mapping[str, str]) -> None:
    cfg = sim.config
    raw_appid = query.get("sdkappid", "")
    if not is_decimal(raw_appid):
        raise SimError(60012, "sdkappid is missing or invalid in the URL")
    identifier = query.get("identifier", "")
    usersig = query.get("usersig", "")
    if not identifier or not usersig:
        raise SimError(60025, "identifier or usersig is missing in the URL")
    if query.get("contenttype") != "json":
        raise SimError(60025, "contenttype must be json")
    rnd = query.get("random", "")
    if not is_decimal(rnd) or int(rnd) > 0xFFFFFFFF:
        raise SimError(60025, "random must be a 32-bit unsigned integer")
    appid = int(raw_appid)
    try:
        if decode(usersig).sdkappid != appid:
            raise SimError(70014, "sdkappid in the URL does not match the usersig")
        if appid != cfg.sdkappid:
            raise SimError(60006, "SDKAppID is invalid")
        verify(usersig, sdkappid=appid, key=cfg.secret_key.reveal(), identifier=identifier, now=sim.state.clock())
    except UserSigError as err:
        raise SimError(err.im_code, err.message) from None
    if identifier != cfg.admin_identifier:
        raise SimError(10007, "the identifier is not the app admin")


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise SimError(60003, "request body is empty")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SimError(60003, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimError(60003, "request body must be a JSON object")
    return body


def _malformed(group_id: str) -> bool:
    return (not group_id or len(group_id.encode("utf-8")) > MAX_GROUP_ID_BYTES
            or any(not 0x20 <= ord(c) <= 0x7E for c in group_id))


def _create_group(sim: Sim, body: dict[str, Any]) -> dict[str, Any]:
    group_type, name = body.get("Type"), body.get("Name")
    if group_type not in GROUP_TYPES:
        raise SimError(10004, f"Type must be one of {', '.join(GROUP_TYPES)}")
    if not isinstance(name, str) or not name:
        raise SimError(10004, "Name is required")
    owner = body.get("Owner_Account")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise SimError(10004, "Owner_Account must be a string")
    raw_members = body.get("MemberList", [])
    if not isinstance(raw_members, list) or not all(
            isinstance(m, dict) and isinstance(m.get("Member_Account"), str) for m in raw_members):
        raise SimError(10004, "MemberList must be a list of {Member_Account}")
    if group_type == "AVChatRoom" and raw_members:
        raise SimError(10007, "AVChatRoom groups cannot have members added at creation")
    custom = body.get("GroupId")
    if custom is not None:
        if not isinstance(custom, str):
            raise SimError(10004, "GroupId must be a string")
        _check_custom_id(custom, group_type)
        group_id = custom
    else:
        group_id = sim.state.new_group_id(group_type)
    members = list(dict.fromkeys(([owner] if owner else []) + [m["Member_Account"] for m in raw_members]))
    group = SimGroup(group_id, group_type, name, owner, members, int(sim.state.clock()))
    if not sim.state.add(group):
        raise SimError(10021, "the group ID is already in use")
    return {"GroupId": group_id}


def _check_custom_id(group_id: str, group_type: str) -> None:
    if _malformed(group_id):
        raise SimError(10015, "custom group ID must be 1-48 bytes of printable ASCII")
    if group_type == "Community":
        if not group_id.startswith("@TGS#_") or len(group_id) == len("@TGS#_"):
            raise SimError(10015, "Community custom group IDs must start with @TGS#_")
    elif group_id.startswith("@TGS#"):
        raise SimError(10015, "custom group IDs must not start with @TGS#")


def _destroy_group(sim: Sim, body: dict[str, Any]) -> dict[str, Any]:
    group_id = body.get("GroupId")
    if not isinstance(group_id, str) or not group_id:
        raise SimError(10004, "GroupId is required")
    if _malformed(group_id):
        raise SimError(10015, "invalid group ID")
    group = sim.state.destroy(group_id)
    if group is None:
        raise SimError(10010, "this group does not exist")
    event: dict[str, Any] = {
        "CallbackCommand": COMMAND,
        "GroupId": group.group_id,
        "Type": group.type,
        "Owner_Account": group.owner or "",
        "Name": group.name,
        "EventTime": int(sim.state.clock() * 1000),
    }
    if group.type != "Community":
        event["MemberList"] = [{"Member_Account": m} for m in group.members]
    done = sim.sender.submit(event)
    if sim.config.callback_first:
        cfg = sim.config
        done.wait(cfg.callback_timeout_seconds * (cfg.callback_retries + 2)
                  + cfg.callback_delay_ms / 1000 + cfg.reorder_hold_ms / 1000)
    return {}


def _get_group_info(sim: Sim, body: dict[str, Any]) -> dict[str, Any]:
    ids = body.get("GroupIdList")
    if (not isinstance(ids, list) or not ids or len(ids) > MAX_GROUPS_PER_INFO
            or not all(isinstance(g, str) for g in ids)):
        raise SimError(10004, f"GroupIdList must list 1-{MAX_GROUPS_PER_INFO} group IDs")
    flt = body.get("ResponseFilter") or {}
    base_filter = flt.get("GroupBaseInfoFilter") if isinstance(flt, dict) else None
    out = []
    for gid in ids:
        if _malformed(gid):
            out.append({"GroupId": gid, "ErrorCode": 10015, "ErrorInfo": "invalid group ID"})
            continue
        group = sim.state.alive(gid)
        if group is None:
            out.append({"GroupId": gid, "ErrorCode": 10010, "ErrorInfo": "this group does not exist"})
            continue
        info: dict[str, Any] = {"Type": group.type, "Name": group.name, "Owner_Account": group.owner or "",
                                "CreateTime": group.created_at, "MemberNum": len(group.members),
                                "Appid": sim.config.sdkappid}
        if isinstance(base_filter, list):
            info = {k: v for k, v in info.items() if k in base_filter}
        else:
            info["MemberList"] = [{"Member_Account": m} for m in group.members]
        out.append({"GroupId": gid, "ErrorCode": 0, "ErrorInfo": "", **info})
    return {"GroupInfo": out}


_APIS = {"create_group": _create_group, "destroy_group": _destroy_group, "get_group_info": _get_group_info}
