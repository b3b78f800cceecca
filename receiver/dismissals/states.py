"""The dismissal status machine: every transition, enforced by a conditional UPDATE."""

from __future__ import annotations

import enum
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, update
from sqlalchemy.orm import Session

from receiver.models import Confirmation, Dismissal, Status, utcnow


class Event(str, enum.Enum):
    CLAIM = "claim"  # a worker takes the row to send it
    SENT = "sent"  # IM answered OK: wait for the callback
    RETRY = "retry"  # a retryable error: try again later
    EXHAUSTED = "exhausted"  # retryable errors until the attempts ran out: probe whether the group is gone
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
    Event.EXHAUSTED: (Status.SENDING,),
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
    # Not `failed` (IM never refused), and some of those calls may have dismissed the group:
    # the reconciler's probe settles it (gone: confirmed; alive: re-sent once, then unconfirmed).
    Event.EXHAUSTED: (Status.AWAITING_CALLBACK, None),
    Event.FAIL: (Status.FAILED, None),
    Event.ALREADY_GONE: (Status.CONFIRMED, Confirmation.ALREADY_GONE),
    Event.CALLBACK: (Status.CONFIRMED, Confirmation.CALLBACK),
    Event.PROBE_GONE: (Status.CONFIRMED, Confirmation.PROBE),
    Event.REDISPATCH: (Status.QUEUED, None),
    Event.GIVE_UP: (Status.UNCONFIRMED, None),
    Event.RELEASE: (Status.QUEUED, None),
}


# One Core UPDATE per shape (event, columns set, guards), built once with bound parameters and
# reused: building and caching a fresh statement per call was a third of a callback's CPU.
_statements: dict[tuple, Any] = {}
_statements_lock = threading.Lock()


def _statement(event: Event, columns: tuple[str, ...], owner: bool, due: bool, keep_confirmed_at: bool):
    key = (event, columns, owner, due, keep_confirmed_at)
    stmt = _statements.get(key)
    if stmt is not None:
        return stmt
    c = Dismissal.__table__.c
    values = {name: bindparam(f"v_{name}", type_=c[name].type) for name in columns}
    if keep_confirmed_at:
        # A row already confirmed (by probe or 10010) keeps the time we first knew.
        values["confirmed_at"] = func.coalesce(c.confirmed_at, values["confirmed_at"])
    stmt = (update(Dismissal.__table__)
            .where(c.id == bindparam("w_id"), c.status.in_([s.value for s in ALLOWED_FROM[event]]))
            .values(values))
    if event is Event.CALLBACK:
        # Only one callback is linked to a dismissal; a second one is a different event.
        stmt = stmt.where(c.callback_id.is_(None))
    if owner:
        stmt = stmt.where(c.lease_owner == bindparam("w_owner"))
    if due:
        stmt = stmt.where(c.next_attempt_at <= bindparam("w_due", type_=c.next_attempt_at.type))
    with _statements_lock:
        _statements[key] = stmt
    return stmt


def transition(session: Session | Connection, dismissal_id: str, event: Event, *, owner: str | None = None,
               due_by: datetime | None = None, keep_confirmed_at: bool = False, **values: Any) -> bool:
    """Move one dismissal by `event` if its current status allows it; True when the row moved.

    The check and the write are one statement, so a concurrent writer (the callback handler,
    another worker) can never move a row backwards: the loser's UPDATE matches no row.
    `owner`: only while this worker holds the row's lease; `due_by`: only if it was due by then;
    `keep_confirmed_at`: a `confirmed_at` already set is kept (the first time we knew).
    """
    status, confirmation = _TARGET[event]
    values = {"status": status, "updated_at": utcnow(), **values}
    if confirmation is not None:
        values["confirmation"] = confirmation
    columns = tuple(sorted(values))
    stmt = _statement(event, columns, owner is not None, due_by is not None, keep_confirmed_at)
    params = {f"v_{name}": values[name] for name in columns}
    params["w_id"] = dismissal_id
    if owner is not None:
        params["w_owner"] = owner
    if due_by is not None:
        params["w_due"] = due_by
    return session.execute(stmt, params).rowcount == 1
