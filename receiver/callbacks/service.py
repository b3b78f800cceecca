"""Store callbacks once, keep broken requests in quarantine, and hand events to the matcher."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from receiver.dismissals.matching import match_callback
from receiver.models import Callback, CallbackState, GroupMember, new_id, utcnow
from receiver.schemas.tencent import event_time_from_ms
from receiver.sqlutil import insert_ignoring_conflicts
from receiver.textsafety import storable


@dataclass(frozen=True)
class RequestMeta:
    """What we keep of the HTTP request around a callback body."""

    query_string: str
    sdkappid: int | None
    command: str | None
    client_ip: str | None
    opt_platform: str | None
    request_time: int | None
    content_type: str | None
    remote_addr: str | None


@dataclass(frozen=True)
class RecordResult:
    outcome: str  # "stored" | "duplicate"
    callback_id: str
    dismissal_id: str | None = None
    matched_request: bool = False


def dedupe_key(sdkappid: int, command: str, group_id: str, event_time_ms: int | None, body: dict[str, Any]) -> str:
    """The identity of one event: IM sends no event id, so (app, command, group, EventTime).

    Without EventTime (older IM editions) the canonical body stands in for it, so a group
    re-created under the same custom ID and dismissed again is still a new event.
    """
    if event_time_ms is not None:
        tail = f"t:{event_time_ms}"
    else:
        tail = "b:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return hashlib.sha256(f"{sdkappid}|{command}|{group_id}|{tail}".encode()).hexdigest()


def record_group_destroyed(
    session: Session,
    *,
    data: dict[str, Any],
    body: dict[str, Any],
    raw_body: bytes,
    meta: RequestMeta,
    now: datetime | None = None,
) -> RecordResult:
    """Store a validated dismissed-group callback and match it, in one transaction; commit."""
    now = now or utcnow()
    assert meta.sdkappid is not None
    key = dedupe_key(meta.sdkappid, data["command"], data["group_id"], data.get("event_time_ms"), body)
    members = data.get("members")
    callback_id = new_id()
    inserted = session.execute(
        insert_ignoring_conflicts(session, Callback, index_elements=[Callback.dedupe_key])
        .values(
            id=callback_id,
            state=CallbackState.ACCEPTED,
            dedupe_key=key,
            sdkappid=meta.sdkappid,
            command=data["command"],
            group_id=data["group_id"],
            group_type=data["group_type"],
            owner_account=data.get("owner_account"),
            name=data.get("name"),
            member_count=None if members is None else len(members),
            event_time=event_time_from_ms(data.get("event_time_ms")),
            client_ip=storable(meta.client_ip and meta.client_ip[:64]),
            opt_platform=storable(meta.opt_platform and meta.opt_platform[:32]),
            request_time=meta.request_time,
            query_string=storable(meta.query_string),
            content_type=storable(meta.content_type and meta.content_type[:200]),
            remote_addr=meta.remote_addr,
            raw_body=raw_body,
            received_at=now,
            duplicates=0,
        )
        .returning(Callback.id)
    ).scalar()
    if inserted is None:
        existing_id = session.execute(
            update(Callback)
            .where(Callback.dedupe_key == key)
            .values(duplicates=Callback.duplicates + 1, last_duplicate_at=now)
            .returning(Callback.id)
        ).scalar_one()
        session.commit()
        return RecordResult("duplicate", existing_id)

    match = match_callback(
        session,
        callback_id=callback_id,
        sdkappid=meta.sdkappid,
        group_id=data["group_id"],
        event_time=event_time_from_ms(data.get("event_time_ms")),
        now=now,
    )
    if members:
        session.execute(
            insert(GroupMember),
            [
                {"dismissal_id": match.dismissal_id, "callback_id": callback_id,
                 "group_id": data["group_id"], "account": m["account"]}
                for m in members
            ],
        )
    session.commit()
    return RecordResult("stored", callback_id, match.dismissal_id, match.matched_request)


def quarantine(session: Session, *, reason: str, raw_body: bytes, meta: RequestMeta, group_id: str | None = None,
               now: datetime | None = None) -> str:
    """Keep a refused callback request whole, with the reason; commit and return its id."""
    row = Callback(
        id=new_id(),
        state=CallbackState.QUARANTINED,
        quarantine_reason=reason,
        sdkappid=meta.sdkappid,
        command=storable((meta.command or None) and meta.command[:200]),
        group_id=storable(group_id[:200]) if isinstance(group_id, str) else None,
        client_ip=storable((meta.client_ip or None) and meta.client_ip[:64]),
        opt_platform=storable((meta.opt_platform or None) and meta.opt_platform[:32]),
        request_time=meta.request_time,
        query_string=storable(meta.query_string),
        content_type=storable((meta.content_type or None) and meta.content_type[:200]),
        remote_addr=meta.remote_addr,
        raw_body=raw_body,
        received_at=now or utcnow(),
        duplicates=0,
    )
    session.add(row)
    session.commit()
    return row.id


@dataclass(frozen=True)
class Handled:
    outcome: str  # "stored" | "duplicate" | "quarantined" | "ignored"
    reason: str = ""
    record: RecordResult | None = None
    quarantine_id: str | None = None


def handle_body(session: Session, *, raw_body: bytes, meta: RequestMeta, now: datetime | None = None) -> Handled:
    """Validate a callback body and store it once, or quarantine it with the reason; commit.

    The endpoint, the spool drain and replay all come through here, so they cannot disagree.
    """
    from receiver.callbacks.parsing import Refused, group_id_of, validate_body

    result = validate_body(raw_body, meta.command)
    if isinstance(result, Refused):
        if result.ignored:
            return Handled("ignored", result.reason)
        qid = quarantine(session, reason=result.reason, raw_body=raw_body, meta=meta,
                         group_id=group_id_of(raw_body), now=now)
        return Handled("quarantined", result.reason, quarantine_id=qid)
    if meta.command is None:
        meta = RequestMeta(**{**meta.__dict__, "command": result.command})
    record = record_group_destroyed(session, data=result.data, body=result.body, raw_body=raw_body, meta=meta, now=now)
    return Handled(record.outcome, record=record)
