"""Use cases for starting dismissals: validate, dedupe, and queue them (the outbox) before any send."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from receiver.models import OPEN_STATUSES, Dismissal, Source, Status, new_id, utcnow
from receiver.sqlutil import bulk_insert, insert_ignoring_conflicts, refresh_statistics

MAX_GROUP_ID_BYTES = 48
MAX_BATCH = 10_000


class DismissalRequestError(ValueError):
    """A request to dismiss cannot be accepted as given (the API answers 422)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class IdempotencyConflict(DismissalRequestError):
    """The Idempotency-Key was used before with a different request body."""


def validate_group_id(group_id: object) -> str:
    """IM group IDs are printable ASCII (0x20–0x7e), at most 48 bytes (tencent-im.md §5)."""
    if not isinstance(group_id, str) or not group_id:
        raise DismissalRequestError("group_id must be a non-empty string", "group_id")
    if len(group_id) > MAX_GROUP_ID_BYTES:
        raise DismissalRequestError(f"group_id must be at most {MAX_GROUP_ID_BYTES} bytes", "group_id")
    if any(not (0x20 <= ord(ch) <= 0x7E) for ch in group_id):
        raise DismissalRequestError("group_id must be printable ASCII (0x20-0x7e)", "group_id")
    return group_id


@dataclass(frozen=True)
class Requested:
    dismissal: Dismissal
    created: bool  # False: an open dismissal of the group (or the same idempotent request) was returned


def _fingerprint(group_id: str, reason: str | None, requested_by: str | None) -> str:
    doc = json.dumps({"group_id": group_id, "reason": reason, "requested_by": requested_by}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def _open_dismissal(session: Session, sdkappid: int, group_id: str) -> Dismissal | None:
    return session.scalars(
        select(Dismissal).where(
            Dismissal.sdkappid == sdkappid,
            Dismissal.group_id == group_id,
            Dismissal.status.in_(OPEN_STATUSES),
        )
    ).first()


def _by_key(session: Session, key: str, fingerprint: str) -> Dismissal | None:
    existing = session.scalars(select(Dismissal).where(Dismissal.idempotency_key == key)).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict("Idempotency-Key was already used with a different request body", "Idempotency-Key")
    return existing


def request_dismissal(
    session: Session,
    *,
    sdkappid: int,
    group_id: str,
    reason: str | None = None,
    requested_by: str | None = None,
    idempotency_key: str | None = None,
) -> Requested:
    """Queue a dismissal of one group, or return the open one (or the same keyed request); commit.

    The row is committed as `queued` before anything is sent to IM, so a callback that races
    ahead of IM's REST answer always finds the request it confirms.
    """
    group_id = validate_group_id(group_id)
    fingerprint = _fingerprint(group_id, reason, requested_by)
    for _ in range(3):
        if idempotency_key:
            existing = _by_key(session, idempotency_key, fingerprint)
            if existing is not None:
                return Requested(existing, False)
        now = utcnow()
        new = session.execute(
            insert_ignoring_conflicts(session, Dismissal)
            .values(
                id=new_id(), group_id=group_id, sdkappid=sdkappid, source=Source.API, status=Status.QUEUED,
                reason=reason, requested_by=requested_by, requested_at=now, attempts=0, probes=0,
                redispatches=0, idempotency_key=idempotency_key or None, request_fingerprint=fingerprint,
                next_attempt_at=now, updated_at=now,
            )
            .returning(Dismissal.id)
        ).scalar()
        if new is not None:
            session.commit()
            return Requested(session.get(Dismissal, new), True)
        session.rollback()
        if idempotency_key:
            existing = _by_key(session, idempotency_key, fingerprint)
            if existing is not None:
                return Requested(existing, False)
        open_one = _open_dismissal(session, sdkappid, group_id)
        if open_one is not None:
            return Requested(open_one, False)
        # The conflicting row closed between our INSERT and SELECT: try again.
    raise RuntimeError("could not queue the dismissal after 3 attempts")  # pragma: no cover


def request_batch(
    session: Session,
    *,
    sdkappid: int,
    group_ids: Sequence[str],
    reason: str | None = None,
    requested_by: str | None = None,
) -> list[Requested]:
    """Queue dismissals of many groups at once (open ones are returned as they are); commit.

    One INSERT for the whole batch; the answer lists one item per distinct group, in input order.
    """
    if not group_ids:
        raise DismissalRequestError("group_ids must not be empty", "group_ids")
    if len(group_ids) > MAX_BATCH:
        raise DismissalRequestError(f"at most {MAX_BATCH} group_ids per batch", "group_ids")
    for i, gid in enumerate(group_ids):
        try:
            validate_group_id(gid)
        except DismissalRequestError as exc:
            raise DismissalRequestError(f"group_ids[{i}]: {exc}", f"group_ids.{i}") from None
    distinct = list(dict.fromkeys(group_ids))
    now = utcnow()
    rows = [
        dict(id=new_id(), group_id=gid, sdkappid=sdkappid, source=Source.API, status=Status.QUEUED,
             reason=reason, requested_by=requested_by, requested_at=now, attempts=0, probes=0,
             redispatches=0, request_fingerprint=_fingerprint(gid, reason, requested_by),
             next_attempt_at=now, updated_at=now)
        for gid in sorted(distinct)  # one lock order for every batch: concurrent batches never deadlock
    ]
    # One statement for the whole batch; a group with an open dismissal (the partial unique
    # index) is skipped here and answered with that one below.
    created_ids = {gid: did for did, gid in bulk_insert(session.connection(), Dismissal.__table__, rows,
                                                         skip_conflicts=True, returning=("id", "group_id"))}
    session.commit()
    refresh_statistics(session, Dismissal.__table__, len(created_ids))
    by_group: dict[str, Dismissal] = {}
    for chunk in _chunks(distinct, 1000):
        new_ids = [created_ids[g] for g in chunk if g in created_ids]
        if new_ids:
            by_group.update({d.group_id: d for d in session.scalars(select(Dismissal).where(Dismissal.id.in_(new_ids)))})
        missing = [g for g in chunk if g not in created_ids]
        if missing:
            for d in session.scalars(
                select(Dismissal).where(
                    Dismissal.sdkappid == sdkappid,
                    Dismissal.group_id.in_(missing),
                    Dismissal.status.in_(OPEN_STATUSES),
                )
            ):
                by_group[d.group_id] = d
    out: list[Requested] = []
    for gid in distinct:
        if gid in by_group:
            out.append(Requested(by_group[gid], gid in created_ids))
        else:
            # Its open dismissal finished between the INSERT and the SELECT: queue it alone.
            out.append(request_dismissal(session, sdkappid=sdkappid, group_id=gid, reason=reason, requested_by=requested_by))
    return out


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
