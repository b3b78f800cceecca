"""Replay quarantined callback requests: validate them again and store those that now pass."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from receiver.callbacks.parsing import Parsed, Refused, validate_body
from receiver.callbacks.service import RequestMeta, dedupe_key, record_group_destroyed
from receiver.models import Callback, CallbackState, utcnow
from receiver.schemas.tencent import GROUP_DESTROYED

INVALID_PREFIX = "invalid: "


@dataclass
class ReplayReport:
    examined: int = 0
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    still_invalid: int = 0
    reasons: Counter = field(default_factory=Counter)
    dry_run: bool = False


def _meta(row: Callback) -> RequestMeta:
    return RequestMeta(
        query_string=row.query_string, sdkappid=row.sdkappid, command=GROUP_DESTROYED, client_ip=row.client_ip,
        opt_platform=row.opt_platform, request_time=row.request_time, content_type=row.content_type,
        remote_addr=row.remote_addr,
    )


def replay_quarantined(*, session: Session, sdkappid: int, since: datetime | None = None, dry_run: bool = False,
                       now: datetime | None = None) -> ReplayReport:
    """Re-validate quarantined requests not yet resolved; store and match those that pass now.

    A request that passes is recorded exactly as if it had been accepted when it arrived
    (`received_at` is kept), through the same service the endpoint uses, so deduplication and
    matching apply. The quarantined row stays as it was received, with `replayed_at` and
    `replay_outcome` set. The two commits are not atomic; a crash in between leaves the row
    unresolved, and the next replay finds the event already stored and records "duplicate".
    """
    report = ReplayReport(dry_run=dry_run)
    where = [
        Callback.state == CallbackState.QUARANTINED,
        # Resolved rows (stored, duplicate, ignored) are done; still-invalid ones are tried again.
        or_(Callback.replay_outcome.is_(None), Callback.replay_outcome.startswith(INVALID_PREFIX, autoescape=True)),
    ]
    if since is not None:
        where.append(Callback.received_at >= since)
    ids = session.scalars(select(Callback.id).where(*where).order_by(Callback.id)).all()
    for callback_id in ids:
        row = session.get(Callback, callback_id)
        if row is None:
            continue
        report.examined += 1
        if row.sdkappid != sdkappid:
            result: Parsed | Refused = Refused("SdkAppid does not match this service's SDKAppID")
        else:
            result = validate_body(row.raw_body, row.command)
        if isinstance(result, Refused):
            if result.ignored:
                report.ignored += 1
                outcome = f"ignored: {result.reason}"
            else:
                report.still_invalid += 1
                report.reasons[result.reason] += 1
                outcome = INVALID_PREFIX + result.reason
        elif dry_run:
            key = dedupe_key(sdkappid, result.data["command"], result.data["group_id"],
                             result.data.get("event_time_ms"), result.body)
            exists = session.scalar(select(Callback.id).where(Callback.dedupe_key == key))
            if exists:
                report.duplicates += 1
            else:
                report.stored += 1
            continue
        else:
            recorded = record_group_destroyed(session, data=result.data, body=result.body, raw_body=row.raw_body,
                                              meta=_meta(row), now=row.received_at)
            if recorded.outcome == "stored":
                report.stored += 1
                outcome = f"stored as callback {recorded.callback_id} (dismissal {recorded.dismissal_id})"
            else:
                report.duplicates += 1
                outcome = f"duplicate of callback {recorded.callback_id}"
            row = session.get(Callback, callback_id)
        if not dry_run:
            row.replayed_at = now or utcnow()
            row.replay_outcome = outcome[:2000]
            session.commit()
    if dry_run:
        session.rollback()
    return report
