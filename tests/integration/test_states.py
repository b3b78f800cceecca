"""transition(): each guard holds, whatever statements were built and cached before it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from receiver.dismissals.states import Event, transition
from receiver.models import Confirmation, Dismissal, Source, Status, new_id
from tests.conftest import TEST_SDKAPPID

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def add(session, status: Status, **over) -> str:
    row = Dismissal(id=new_id(), group_id=f"g-{new_id()}", sdkappid=TEST_SDKAPPID, source=Source.API, status=status,
                    requested_at=T0, attempts=1, probes=0, redispatches=0, updated_at=T0, **over)
    session.add(row)
    session.flush()
    return row.id


def test_status_guard_and_target(db):
    with db.session_scope() as s:
        queued, done = add(s, Status.QUEUED), add(s, Status.FAILED)
        assert transition(s, queued, Event.ALREADY_GONE, confirmed_at=T0)
        assert not transition(s, done, Event.ALREADY_GONE, confirmed_at=T0)  # failed is final for this event
        s.expire_all()
        assert s.get(Dismissal, queued).status is Status.CONFIRMED
        assert s.get(Dismissal, queued).confirmation is Confirmation.ALREADY_GONE
        assert s.get(Dismissal, done).status is Status.FAILED


def test_owner_guard_is_not_lost_by_a_cached_statement_without_it(db):
    with db.session_scope() as s:
        a, b = add(s, Status.SENDING, lease_owner="w1"), add(s, Status.SENDING, lease_owner="w1")
        assert transition(s, a, Event.SENT, next_attempt_at=T0)  # same shape, no owner guard
        assert not transition(s, b, Event.SENT, owner="w2", next_attempt_at=T0)
        assert transition(s, b, Event.SENT, owner="w1", next_attempt_at=T0)


def test_due_guard(db):
    with db.session_scope() as s:
        later = add(s, Status.AWAITING_CALLBACK, next_attempt_at=T0 + timedelta(minutes=5))
        assert not transition(s, later, Event.GIVE_UP, due_by=T0, next_attempt_at=None)
        assert transition(s, later, Event.GIVE_UP, due_by=T0 + timedelta(minutes=5), next_attempt_at=None)


def test_callback_keeps_the_first_confirmation_time_and_links_once(db):
    with db.session_scope() as s:
        probed = add(s, Status.CONFIRMED, confirmation=Confirmation.PROBE, confirmed_at=T0)
        fresh = add(s, Status.AWAITING_CALLBACK)
        later = T0 + timedelta(minutes=1)
        from tests.integration.test_bulk_insert import callback_row
        from receiver.models import Callback
        cb1, cb2, cb3 = (Callback(**callback_row(k)) for k in ("k1", "k2", "k3"))
        s.add_all([cb1, cb2, cb3])
        s.flush()
        assert transition(s, probed, Event.CALLBACK, keep_confirmed_at=True, callback_id=cb1.id, confirmed_at=later)
        assert transition(s, fresh, Event.CALLBACK, keep_confirmed_at=True, callback_id=cb2.id, confirmed_at=later)
        assert not transition(s, fresh, Event.CALLBACK, keep_confirmed_at=True, callback_id=cb3.id, confirmed_at=later)
        s.expire_all()
        assert s.get(Dismissal, probed).confirmed_at == T0 and s.get(Dismissal, probed).callback_id == cb1.id
        assert s.get(Dismissal, probed).confirmation is Confirmation.CALLBACK
        assert s.get(Dismissal, fresh).confirmed_at == later and s.get(Dismissal, fresh).callback_id == cb2.id
