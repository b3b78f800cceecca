"""Tie a dismissed-group callback to the dismissal it confirms, or record an external one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from receiver.dismissals.states import Event, transition
from receiver.models import OPEN_STATUSES, Confirmation, Dismissal, Source, Status, new_id

# IM's EventTime and our clock are both NTP-kept; a callback whose event happened this long
# before we even asked for the dismissal cannot have been caused by our request.
CLOCK_TOLERANCE = timedelta(seconds=5)
# A finished request (failed, unconfirmed, or confirmed without a callback) still takes a late
# callback as its evidence, but not forever: a custom group ID can be re-created and dismissed
# again by someone else much later.
LATE_EVIDENCE_WINDOW = timedelta(hours=24)


@dataclass
class Candidate:
    """An `api` dismissal that a callback for its group could confirm."""

    id: str
    status: Status
    requested_at: datetime | None


# A dismissal `d` that a callback for its group could confirm: one of ours not yet tied to one.
CANDIDATE = "d.source = 'api' AND d.callback_id IS NULL"
# For a callback row `batch` (`sqlutil.bulk_insert_linked`): no dismissal awaits it, so it is an
# external dismissal whatever `match_callback` would weigh.
# OFFSET 0 keeps the subquery a lookup per callback (an index probe). Pulled up into an anti-join,
# it was planned for json_populate_recordset's estimate of 100 rows, not the batch's few, and
# hashed every pending dismissal of ours for each batch while the table was small enough for
# that to look cheaper (tens of thousands of rows, as in the dispatch bench).
NO_CANDIDATE = ("NOT EXISTS (SELECT 1 FROM dismissals d WHERE d.sdkappid = batch.sdkappid"
                " AND d.group_id = batch.group_id AND " + CANDIDATE + " OFFSET 0)")

# Hot on the callback path (once per group-commit batch): a fixed text on the driver, with the
# batch's (app, group) pairs as one JSON parameter, costs a fraction of building and compiling
# the Core select (and psycopg adapts a string for less than a tenth of what two lists cost).
# The callback path runs it in the same statement as its INSERT (`CANDIDATES_QUERY`). It
# matches the exact pairs: a dismissal of another app's group of the same name is not touched.
#
# On PostgreSQL the candidates are locked (FOR NO KEY UPDATE: it does not block the foreign-key
# checks of attempt rows inserted by the dispatcher) in ascending id order, the order every
# writer of several dismissals in one transaction follows (the dispatcher's answers, the
# reconciler), so two batches can wait for each other but never deadlock. SQLite serialises
# writers with BEGIN IMMEDIATE. Each pair is listed once (`candidates_params`), so each
# dismissal comes back once.
CANDIDATES_QUERY = {
    # The ids are looked up pair by pair (a LATERAL subquery that OFFSET 0 keeps from being
    # flattened into a join), then locked in id order; the candidate condition is checked again
    # under the lock. A plain join of the pairs and dismissals was planned for 100 pairs
    # (json_to_recordset's estimate), not the batch's few, and hashed every pending dismissal of
    # ours for each batch while the table was small enough for that to look cheaper. (The
    # subquery's `d` is its own, so that CANDIDATE reads the same in both places.)
    "postgresql": "SELECT d.sdkappid, d.group_id, d.id, d.status, d.requested_at FROM dismissals d"
                  " WHERE d.id = ANY(ARRAY(SELECT c.id"
                  " FROM json_to_recordset(%s::json) AS k(sdkappid bigint, group_id text)"
                  " CROSS JOIN LATERAL (SELECT d.id FROM dismissals d WHERE d.sdkappid = k.sdkappid"
                  " AND d.group_id = k.group_id AND " + CANDIDATE + " OFFSET 0) AS c))"
                  " AND " + CANDIDATE + " ORDER BY d.id FOR NO KEY UPDATE OF d",
    "sqlite": "SELECT d.sdkappid, d.group_id, d.id, d.status, d.requested_at FROM json_each(?) AS k"
              " JOIN dismissals d ON d.sdkappid = json_extract(k.value, '$.sdkappid')"
              " AND d.group_id = json_extract(k.value, '$.group_id')"
              " WHERE " + CANDIDATE + " ORDER BY d.id",
}
CANDIDATES_WIDTH = 5


def candidates_params(keys: Iterable[tuple[int, str]]) -> tuple:
    """The parameters of `CANDIDATES_QUERY` (either dialect) for these (sdkappid, group_id) pairs."""
    pairs = [{"sdkappid": app, "group_id": group} for app, group in dict.fromkeys(keys)]
    return (json.dumps(pairs, ensure_ascii=False, separators=(",", ":")),)


def candidates_from_rows(dialect, rows: Iterable[tuple]) -> dict[tuple[int, str], list[Candidate]]:
    """Per (sdkappid, group_id), from `CANDIDATES_QUERY`'s rows: the open one first, then newest first."""
    requested_at = Dismissal.__table__.c.requested_at.type.dialect_impl(dialect).result_processor(dialect, None)
    out: dict[tuple[int, str], list[Candidate]] = {}
    for sdkappid, group_id, did, status, requested in reversed(list(rows)):  # newest first
        bucket = out.setdefault((sdkappid, group_id), [])
        if len(bucket) < 5:
            bucket.append(Candidate(did, Status(status), requested_at(requested) if requested_at else requested))
    for bucket in out.values():
        bucket.sort(key=lambda c: c.status not in OPEN_STATUSES)  # stable: newest first within each kind
    return out


def match_callback(
    session: Session | Connection,
    candidates: list[Candidate],
    *,
    callback_id: str,
    event_time: datetime | None,
    now: datetime,
) -> str | None:
    """Confirm the request this callback is evidence for and return its id; None means external.

    Evidence wins over any state, within limits: a callback for an event from before our
    request, or from long after a finished one, is somebody else's dismissal. `now` is when the
    callback was received (replay and the spool pass the original time): requests made after it
    are not weighed at all. `candidates`
    (from `candidates_from_rows`) loses the one it confirms, so a second callback in the same
    batch cannot link to it too.
    """
    reference = event_time or now
    for candidate in list(candidates):
        if candidate.requested_at is not None and candidate.requested_at > now + CLOCK_TOLERANCE:
            # Asked for after this callback was received (`now`: a replay, a spool drained late):
            # its event cannot answer the request, nor make it moot (a custom group ID may have
            # been re-created since). The request goes to IM, which says whether the group is there.
            continue
        if (candidate.status not in OPEN_STATUSES and candidate.requested_at is not None
                and reference > candidate.requested_at + LATE_EVIDENCE_WINDOW):
            continue
        if event_time is not None and candidate.requested_at is not None and event_time < candidate.requested_at - CLOCK_TOLERANCE:
            # The group was dismissed before we asked: not this request's evidence, and an open
            # request is moot. An older request of ours (finished: unconfirmed, failed) may be
            # what the event answers, so the search goes on, newest first.
            if candidate.status in OPEN_STATUSES and transition(
                    session, candidate.id, Event.ALREADY_GONE, confirmed_at=now,
                    next_attempt_at=None, lease_owner=None, lease_expires_at=None):
                candidate.status = Status.CONFIRMED
            continue
        # A row already confirmed by probe or 10010 keeps the time we first knew (keep_confirmed_at).
        if transition(session, candidate.id, Event.CALLBACK, keep_confirmed_at=True, callback_id=callback_id,
                      confirmed_at=now, next_attempt_at=None, lease_owner=None, lease_expires_at=None):
            candidates.remove(candidate)
            return candidate.id
    return None


def external_dismissal_row(*, sdkappid: int, group_id: str, callback_id: str, now: datetime) -> dict:
    """The row of a dismissal we did not ask for, confirmed by its callback."""
    return dict(id=new_id(), group_id=group_id, sdkappid=sdkappid, source=Source.EXTERNAL, status=Status.CONFIRMED,
                confirmation=Confirmation.CALLBACK, callback_id=callback_id, confirmed_at=now, attempts=0,
                probes=0, redispatches=0, updated_at=now)
