"""Tie a dismissed-group callback to the dismissal it confirms, or record an external one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from receiver.dismissals.states import Event, transition
from receiver.models import OPEN_STATUSES, Confirmation, Dismissal, Source, Status

# IM's EventTime and our clock are both NTP-kept; a callback whose event happened this long
# before we even asked for the dismissal cannot have been caused by our request.
CLOCK_TOLERANCE = timedelta(seconds=5)
# A finished request (failed, unconfirmed, or confirmed without a callback) still takes a late
# callback as its evidence, but not forever: a custom group ID can be re-created and dismissed
# again by someone else much later.
LATE_EVIDENCE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Match:
    dismissal_id: str
    matched_request: bool  # True: it confirmed a dismissal we started; False: external


def match_callback(
    session: Session,
    *,
    callback_id: str,
    sdkappid: int,
    group_id: str,
    event_time: datetime | None,
    now: datetime,
) -> Match:
    """Confirm our dismissal of this group (evidence wins over any state) or record an external one."""
    candidates = session.scalars(
        select(Dismissal)
        .where(
            Dismissal.sdkappid == sdkappid,
            Dismissal.group_id == group_id,
            Dismissal.source == Source.API,
            Dismissal.callback_id.is_(None),
        )
        .order_by(Dismissal.id.desc())
        .limit(5)
    ).all()
    # Prefer the open request; otherwise the newest one still lacking callback evidence.
    candidates.sort(key=lambda d: (d.status not in OPEN_STATUSES, ))
    reference = event_time or now
    for candidate in candidates:
        if (candidate.status not in OPEN_STATUSES and candidate.requested_at is not None
                and reference > candidate.requested_at + LATE_EVIDENCE_WINDOW):
            continue
        if event_time is not None and candidate.requested_at is not None and event_time < candidate.requested_at - CLOCK_TOLERANCE:
            # The group was dismissed before we asked: the callback is someone else's dismissal,
            # and our open request is moot.
            if candidate.status in OPEN_STATUSES:
                transition(session, candidate.id, Event.ALREADY_GONE, confirmed_at=now,
                           next_attempt_at=None, lease_owner=None, lease_expires_at=None)
            break
        # A row already confirmed by probe or 10010 keeps the time we first knew.
        if transition(session, candidate.id, Event.CALLBACK, callback_id=callback_id,
                      confirmed_at=func.coalesce(Dismissal.confirmed_at, now),
                      next_attempt_at=None, lease_owner=None, lease_expires_at=None):
            return Match(candidate.id, True)
    external = Dismissal(
        group_id=group_id,
        sdkappid=sdkappid,
        source=Source.EXTERNAL,
        status=Status.CONFIRMED,
        confirmation=Confirmation.CALLBACK,
        callback_id=callback_id,
        confirmed_at=now,
        attempts=0,
        updated_at=now,
    )
    session.add(external)
    session.flush()
    return Match(external.id, False)
