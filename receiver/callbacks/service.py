"""Store callbacks once, keep broken requests in quarantine, and hand events to the matcher."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, update
from sqlalchemy.orm import Session

from receiver.callbacks.parsing import Refused, group_id_of, validate_body
from receiver.dismissals.matching import (
    CANDIDATES_QUERY,
    CANDIDATES_WIDTH,
    NO_CANDIDATE,
    candidates_from_rows,
    candidates_params,
    external_dismissal_row,
    match_callback,
)
from receiver.models import Callback, CallbackState, Dismissal, GroupMember, new_id, utcnow
from receiver.schemas.tencent import event_time_from_ms
from receiver.sqlutil import bulk_insert_and_query, bulk_insert_chain, bulk_insert_linked
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


@dataclass(frozen=True)
class Accepted:
    """A validated dismissed-group callback, ready to be recorded."""

    data: dict[str, Any]
    body: dict[str, Any]
    raw_body: bytes
    meta: RequestMeta
    received_at: datetime

    @property
    def key(self) -> str:
        assert self.meta.sdkappid is not None
        return dedupe_key(self.meta.sdkappid, self.data["command"], self.data["group_id"],
                          self.data.get("event_time_ms"), self.body)


def _callback_row(item: Accepted, callback_id: str, key: str) -> dict[str, Any]:
    data, meta = item.data, item.meta
    members = data.get("members")
    return dict(
        id=callback_id, state=CallbackState.ACCEPTED, dedupe_key=key, sdkappid=meta.sdkappid,
        command=data["command"], group_id=data["group_id"], group_type=data["group_type"],
        owner_account=data.get("owner_account"), name=data.get("name"),
        member_count=None if members is None else len(members),
        event_time=event_time_from_ms(data.get("event_time_ms")),
        client_ip=storable(meta.client_ip and meta.client_ip[:64]),
        opt_platform=storable(meta.opt_platform and meta.opt_platform[:32]),
        request_time=meta.request_time, query_string=storable(meta.query_string),
        content_type=storable(meta.content_type and meta.content_type[:200]),
        remote_addr=meta.remote_addr, raw_body=item.raw_body, received_at=item.received_at, duplicates=0,
    )  # quarantine_reason, last_duplicate_at and the replay columns start NULL


def _member_rows(item: Accepted, dismissal_id: str, callback_id: str) -> list[dict[str, Any]]:
    """The members the callback lists, under the dismissal it confirms (whose `callback_id` is it;
    `GroupMember.callback_id` repeats it for the previous release)."""
    group_id = item.data["group_id"]
    return [{"dismissal_id": dismissal_id, "callback_id": callback_id, "group_id": group_id, "account": m["account"]}
            for m in item.data.get("members") or ()]


def _first_of(keys: list[str]) -> dict[str, int]:
    """Each dedupe key's first position in the batch (later ones are redeliveries)."""
    first_of: dict[str, int] = {}
    for index, key in enumerate(keys):
        first_of.setdefault(key, index)
    return first_of


def record_many(session: Session, items: Sequence[Accepted], *, now: datetime | None = None) -> list[RecordResult]:
    """Store and match validated callbacks in one transaction (`store_many`); commit."""
    results = store_many(session.connection(), items, now=now)
    session.commit()
    return results


def store_many(conn: Connection, items: Sequence[Accepted], *, now: datetime | None = None) -> list[RecordResult]:
    """Store and match validated callbacks in the connection's transaction; the caller commits.

    Each event is stored once (its dedupe key is unique); a redelivery, in this batch or an
    earlier one, only counts as a duplicate on the stored row. On PostgreSQL it takes two
    statements in all, whatever the batch's size, unless a redelivery or a match adds some.
    """
    now = now or utcnow()
    keys = [item.key for item in items]
    first_of = _first_of(keys)
    # Keys in sorted order, in every statement: two batches holding the same events never lock
    # them in opposite orders (no deadlock between processes).
    rows = {key: _callback_row(items[first_of[key]], new_id(), key) for key in sorted(first_of)}
    # One statement: the new callbacks' rows, and our own dismissals of the batch's groups that
    # a callback could confirm (locked, after the callbacks' keys). The driver's cursor, not
    # the ORM's (or Core executemany's) per-row machinery, which costs more than the SQL here.
    stored, candidate_rows = bulk_insert_and_query(
        conn, Callback.__table__, list(rows.values()), skip_conflicts="dedupe_key", returning=("dedupe_key", "id"),
        query=CANDIDATES_QUERY[conn.dialect.name], query_width=CANDIDATES_WIDTH,
        params=candidates_params((item.meta.sdkappid, item.data["group_id"]) for item in items))
    inserted = dict(stored)
    candidates = candidates_from_rows(conn.dialect, candidate_rows)
    # Redeliveries: of an event stored earlier, or repeated within this batch.
    repeats: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in inserted or first_of[key] != index:
            repeats[key] = repeats.get(key, 0) + 1
    existing: dict[str, str] = {}
    for key, n in sorted(repeats.items()):
        existing[key] = conn.execute(
            update(Callback.__table__).where(Callback.__table__.c.dedupe_key == key)
            .values(duplicates=Callback.duplicates + n, last_duplicate_at=now)
            .returning(Callback.id)
        ).scalar_one()

    results: list[RecordResult | None] = [None] * len(items)
    # Same-group events in event order, so matching does not depend on arrival order.
    new = sorted(((i, items[i]) for key, i in first_of.items() if key in inserted),
                 key=lambda pair: (pair[1].data.get("event_time_ms") or 0, pair[0]))
    externals: list[dict] = []
    members: list[dict] = []
    for i, item in new:
        callback_id = inserted[keys[i]]
        sdkappid, group_id = item.meta.sdkappid, item.data["group_id"]
        matched = match_callback(conn, candidates.get((sdkappid, group_id), []), callback_id=callback_id,
                                 event_time=event_time_from_ms(item.data.get("event_time_ms")), now=now)
        if matched is None:
            row = external_dismissal_row(sdkappid=sdkappid, group_id=group_id, callback_id=callback_id, now=now)
            externals.append(row)
            dismissal_id = row["id"]
        else:
            dismissal_id = matched
        members += _member_rows(item, dismissal_id, callback_id)
        results[i] = RecordResult("stored", callback_id, dismissal_id, matched is not None)
    bulk_insert_chain(conn, [(Dismissal.__table__, externals), (GroupMember.__table__, members)])
    for index, key in enumerate(keys):
        if results[index] is None:
            results[index] = RecordResult("duplicate", existing[key])
    return results  # type: ignore[return-value]


def store_unmatched(conn: Connection, items: Sequence[Accepted], *,
                    now: datetime | None = None) -> list[RecordResult | None]:
    """PostgreSQL: store, in one statement, each new callback that no dismissal of ours awaits.

    Such a callback is an external dismissal whatever `match_callback` would weigh, so its
    callback, dismissal and member rows go in together (`bulk_insert_linked`); on a connection
    in autocommit that statement is the whole transaction, one round trip where `store_many`
    takes four. The others get None and are left untouched, for `store_many`: redeliveries (of
    an event stored earlier or earlier in this batch), and callbacks of a group with a
    dismissal of ours not yet tied to a callback, which `store_many` matches under its locks.
    """
    now = now or utcnow()
    keys = [item.key for item in items]
    first_of = _first_of(keys)
    callbacks, dismissals, members = [], [], []
    for key in sorted(first_of):  # the order `store_many` inserts in (no deadlock between batches)
        item = items[first_of[key]]
        callback_id = new_id()
        callbacks.append(_callback_row(item, callback_id, key))
        dismissal = external_dismissal_row(sdkappid=item.meta.sdkappid, group_id=item.data["group_id"],
                                           callback_id=callback_id, now=now)
        dismissals.append(dismissal)
        members += _member_rows(item, dismissal["id"], callback_id)
    inserted = bulk_insert_linked(
        conn, Callback.__table__, callbacks, skip_conflicts="dedupe_key", only_if=NO_CANDIDATE, key="id",
        dependents=[(Dismissal.__table__, dismissals, "callback_id"), (GroupMember.__table__, members, "dismissal_id")])
    position = {row["id"]: n for n, row in enumerate(callbacks)}
    results: list[RecordResult | None] = [None] * len(items)
    for callback_id in inserted:
        n = position[callback_id]
        results[first_of[callbacks[n]["dedupe_key"]]] = RecordResult("stored", callback_id, dismissals[n]["id"])
    return results


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
    return record_many(session, [Accepted(data, body, raw_body, meta, now)], now=now)[0]


def unrecordable_reason(exc: BaseException) -> str:
    """The quarantine reason of a callback valid on its face that could not be recorded (`exc`)."""
    return f"could not be recorded ({type(exc).__name__}); kept in quarantine for replay"


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


def handle_body(session: Session | Callable[[], Session], *, raw_body: bytes, meta: RequestMeta, now: datetime | None = None,
                recorder: Callable[[Accepted], RecordResult] | None = None) -> Handled:
    """Validate a callback body and store it once, or quarantine it with the reason; commit.

    The endpoint, the spool drain and replay all come through here, so they cannot disagree.
    `recorder` stores a valid callback (the endpoint passes its group committer); by default
    it is recorded alone on `session`. `session` may be a callable that opens the session when
    one is first needed (the endpoint's valid callbacks need none).
    """
    session_now: Callable[[], Session] = session if callable(session) else lambda: session

    now = now or utcnow()
    result = validate_body(raw_body, meta.command)
    if isinstance(result, Refused):
        if result.ignored:
            return Handled("ignored", result.reason)
        qid = quarantine(session_now(), reason=result.reason, raw_body=raw_body, meta=meta,
                         group_id=group_id_of(raw_body), now=now)
        return Handled("quarantined", result.reason, quarantine_id=qid)
    if meta.command is None:
        meta = RequestMeta(**{**meta.__dict__, "command": result.command})
    item = Accepted(result.data, result.body, raw_body, meta, now)
    record = recorder(item) if recorder is not None else record_many(session_now(), [item], now=now)[0]
    return Handled(record.outcome, record=record)
