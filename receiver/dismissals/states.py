"""The dismissal status machine: every transition, enforced by a conditional UPDATE."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from receiver.models import Confirmation, Dismissal, Status, utcnow


class Event(str, enum.Enum):
    CLAIM = "claim"  # a worker takes the row to send it
    SENT = "sent"  # IM answered OK: wait for the callback
    RETRY = "retry"  # a retryable error: try again later
    FAIL = "fail"  # a terminal error
    ALREADY_GONE = "already_gone"  # destroy_group answered 10010
    CALLBACK = "callback"  # the confirming callback arrived
    PROBE_GONE = "probe_gone"  # get_group_info says the group no longer exists
    REDISPATCH = "redispatch"  # the probe found the group alive: send once more
    GIVE_UP = "give_up"  # no evidence after timeout and probes
    RELEASE = "release"  # a stopping worker hands back a row it claimed but never sent


_ANY_NOT_BY_CALLBACK = tuple(Status)  # callback evidence wins over every other state

# event -> statuses it may start from. The target status is in _TARGET.
ALLOWED_FROM: dict[Event, tuple[Status, ...]] = {
    Event.CLAIM: (Status.QUEUED, Status.RETRYING, Status.SENDING),
    Event.SENT: (Status.SENDING,),
    Event.RETRY: (Status.SENDING,),
    Event.FAIL: (Status.SENDING,),
    Event.ALREADY_GONE: (Status.SENDING, Status.QUEUED, Status.RETRYING, Status.AWAITING_CALLBACK),
    Event.CALLBACK: _ANY_NOT_BY_CALLBACK,
    Event.PROBE_GONE: (Status.AWAITING_CALLBACK, Status.UNCONFIRMED),
    Event.REDISPATCH: (Status.AWAITING_CALLBACK,),
    Event.GIVE_UP: (Status.AWAITING_CALLBACK,),
    Event.RELEASE: (Status.SENDING,),
}

_TARGET: dict[Event, tuple[Status, Confirmation | None]] = {
    Event.CLAIM: (Status.SENDING, None),
    Event.SENT: (Status.AWAITING_CALLBACK, None),
    Event.RETRY: (Status.RETRYING, None),
    Event.FAIL: (Status.FAILED, None),
    Event.ALREADY_GONE: (Status.CONFIRMED, Confirmation.ALREADY_GONE),
    Event.CALLBACK: (Status.CONFIRMED, Confirmation.CALLBACK),
    Event.PROBE_GONE: (Status.CONFIRMED, Confirmation.PROBE),
    Event.REDISPATCH: (Status.QUEUED, None),
    Event.GIVE_UP: (Status.UNCONFIRMED, None),
    Event.RELEASE: (Status.QUEUED, None),
}


def transition(session: Session, dismissal_id: str, event: Event, *, where: tuple = (), **values: Any) -> bool:
    """Move one dismissal by `event` if its current status allows it; True when the row moved.

    The check and the write are one statement, so a concurrent writer (the callback handler,
    another worker) can never move a row backwards: the loser's UPDATE matches no row.
    """
    status, confirmation = _TARGET[event]
    values = {"status": status, "updated_at": utcnow(), **values}
    if confirmation is not None:
        values["confirmation"] = confirmation
    stmt = (
        update(Dismissal)
        .where(Dismissal.id == dismissal_id, Dismissal.status.in_(ALLOWED_FROM[event]), *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if event is Event.CALLBACK:
        # Only one callback is linked to a dismissal; a second one is a different event.
        stmt = stmt.where(Dismissal.callback_id.is_(None))
    return session.execute(stmt).rowcount == 1
