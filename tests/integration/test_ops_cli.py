"""`replay`, `purge` and `usersig` through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from receiver.callbacks.service import RequestMeta, quarantine
from receiver.config import Secret
from receiver.dismissals.service import request_dismissal
from receiver.im.usersig import verify
from receiver.models import (
    Callback, CallbackState, Dismissal, DismissalAttempt, GroupMember, Source, Status, utcnow,
)
from tests.conftest import TEST_SDKAPPID
from tests.helpers import GROUP_DESTROYED, callback_query, destroyed_body, encode


def meta(command=GROUP_DESTROYED):
    return RequestMeta("SdkAppid=1&CallbackCommand=x", TEST_SDKAPPID, command, "10.0.0.1", "RESTAPI", None,
                       "application/json", "127.0.0.1")


def run(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    return result.exit_code, result.output


def count(db, model, *where):
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_replay_stores_what_passes_now_and_marks_the_quarantined_rows(app, db):
    now_ms = int(utcnow().timestamp() * 1000)
    with db.session_scope() as s:
        ours = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="g-replay").dismissal.id
        # Quarantined by an older, stricter release; valid today.
        fixable = quarantine(s, reason="invalid body (old rule)", raw_body=encode(destroyed_body("g-replay", event_time=now_ms)),
                             meta=meta(), group_id="g-replay")
        broken = quarantine(s, reason="malformed JSON", raw_body=b"{nope", meta=meta())
        old = quarantine(s, reason="old", raw_body=encode(destroyed_body("g-old")), meta=meta(),
                         now=utcnow() - timedelta(days=10))

    code, out = run(app, "replay", "--since", "2d", "--dry-run")
    assert code == 0, out
    assert "examined 2 quarantined request(s): would store 1, duplicates 0, ignored 0, still invalid 1" in out
    assert count(db, Callback, Callback.state == CallbackState.ACCEPTED) == 0

    code, out = run(app, "replay", "--since", "2d")
    assert code == 0, out
    assert "stored 1, duplicates 0, ignored 0, still invalid 1" in out and "malformed JSON" in out
    with db.session_scope() as s:
        accepted = s.scalars(select(Callback).where(Callback.state == CallbackState.ACCEPTED)).one()
        dismissal = s.get(Dismissal, ours)
        assert (dismissal.status, dismissal.callback_id) == (Status.CONFIRMED, accepted.id)
        fixed = s.get(Callback, fixable)
        assert fixed.state == CallbackState.QUARANTINED and fixed.replayed_at is not None
        assert fixed.replay_outcome.startswith(f"stored as callback {accepted.id}")
        assert accepted.received_at == fixed.received_at  # stored as if accepted when it arrived
        assert s.get(Callback, broken).replay_outcome.startswith("invalid: malformed JSON")
        assert s.get(Callback, old).replayed_at is None  # outside --since
        members = s.scalars(select(GroupMember.account).where(GroupMember.dismissal_id == dismissal.id)).all()
        assert sorted(members) == ["bob", "leckie", "peter"]

    # Resolved rows are not replayed again; the still-invalid one is retried; older ones now too.
    code, out = run(app, "replay")
    assert "examined 2 quarantined request(s): stored 1, duplicates 0, ignored 0, still invalid 1" in out
    assert count(db, Dismissal, Dismissal.source == Source.EXTERNAL, Dismissal.group_id == "g-old") == 1


def test_replaying_an_old_callback_leaves_a_request_made_since_alone(app, db):
    """A custom group ID dismissed ten days ago (its callback quarantined), re-created and asked
    for today: the old event neither confirms today's request nor makes it moot."""
    ten_days_ago = utcnow() - timedelta(days=10)
    with db.session_scope() as s:
        quarantine(s, reason="refused by an older rule", meta=meta(), group_id="room-7", now=ten_days_ago,
                   raw_body=encode(destroyed_body("room-7", event_time=int(ten_days_ago.timestamp() * 1000))))
        ours = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="room-7").dismissal.id
    code, out = run(app, "replay")
    assert code == 0 and "stored 1" in out
    with db.session_scope() as s:
        today = s.get(Dismissal, ours)
        assert (today.status, today.confirmation, today.callback_id) == (Status.QUEUED, None, None)
        old = s.scalars(select(Dismissal).where(Dismissal.id != ours)).one()
        assert (old.source, old.status, old.group_id) == (Source.EXTERNAL, Status.CONFIRMED, "room-7")


def test_replay_of_an_event_already_stored_is_a_duplicate(app, db, client):
    body = destroyed_body("g-twice")
    assert client.post(f"/im/callback?{callback_query(TEST_SDKAPPID)}", data=encode(body),
                       content_type="application/json").status_code == 200
    with db.session_scope() as s:
        row = quarantine(s, reason="x", raw_body=encode(body), meta=meta())
    code, out = run(app, "replay")
    assert "stored 0, duplicates 1" in out
    with db.session_scope() as s:
        assert s.get(Callback, row).replay_outcome.startswith("duplicate of callback")
    assert count(db, Dismissal) == 1


def test_replay_rejects_a_bad_since(app):
    code, out = run(app, "replay", "--since", "yesterday")
    assert code == 2 and "neither an ISO 8601 time" in out


def _attempt(session, dismissal_id, started_at):
    session.add(DismissalAttempt(dismissal_id=dismissal_id, api="destroy_group", started_at=started_at,
                                 duration_ms=5, http_status=200, error_code=0, error_info="", outcome="ok"))


def test_purge_deletes_old_records_but_nothing_a_dismissal_relies_on(app, db, client):
    long_ago = utcnow() - timedelta(days=120)
    with db.session_scope() as s:
        open_id = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="g-open").dismissal.id
        final_id = request_dismissal(s, sdkappid=TEST_SDKAPPID, group_id="g-final").dismissal.id
        s.execute(update(Dismissal).where(Dismissal.id == final_id).values(status=Status.FAILED))
        for dismissal_id in (open_id, final_id):
            _attempt(s, dismissal_id, long_ago)
            _attempt(s, dismissal_id, utcnow())
        s.commit()
        quarantine(s, reason="old", raw_body=b"{", meta=meta(), now=long_ago)
        quarantine(s, reason="new", raw_body=b"{", meta=meta())
    # An old accepted callback, the evidence of an external dismissal (with members).
    assert client.post(f"/im/callback?{callback_query(TEST_SDKAPPID)}", data=encode(destroyed_body("g-ext")),
                       content_type="application/json").status_code == 200
    with db.session_scope() as s:
        s.execute(update(Callback).where(Callback.state == CallbackState.ACCEPTED).values(received_at=long_ago))

    code, out = run(app, "purge", "--older-than", "90d", "--dry-run")
    assert code == 0, out
    assert "would delete" in out and "1 quarantined request(s), 0 unlinked callback(s), 1 dismissal attempt(s)" in out
    assert "kept 1 callback(s)" in out
    assert count(db, DismissalAttempt) == 4 and count(db, Callback) == 3

    code, out = run(app, "purge", "--older-than", "90d")
    assert code == 0 and "deleted" in out
    assert count(db, Callback, Callback.state == CallbackState.QUARANTINED) == 1
    assert count(db, Callback, Callback.state == CallbackState.ACCEPTED) == 1
    assert count(db, DismissalAttempt, DismissalAttempt.dismissal_id == open_id) == 2
    assert count(db, DismissalAttempt, DismissalAttempt.dismissal_id == final_id) == 1
    assert count(db, Dismissal) == 3 and count(db, GroupMember) == 3


@pytest.mark.parametrize("arg, message", [("90", "is not a duration"), ("0d", "greater than zero"),
                                          ("-5d", "is not a duration"), ("3w", "is not a duration")])
def test_purge_refuses_bad_durations(app, arg, message):
    code, out = run(app, "purge", "--older-than", arg)
    assert code == 2 and message in out


def test_purge_requires_older_than(app):
    code, out = run(app, "purge")
    assert code == 2 and "--older-than" in out


def test_usersig_prints_a_valid_admin_usersig(app_factory, db):
    app = app_factory(db, im_secret_key=Secret("k" * 32))
    code, out = run(app, "usersig", "--expire", "600")
    assert code == 0, out
    fields = verify(out.strip(), sdkappid=TEST_SDKAPPID, key="k" * 32, identifier="administrator")
    assert fields.expire == 600
    code, out = run(app, "usersig", "--identifier", "alice")
    assert verify(out.strip(), sdkappid=TEST_SDKAPPID, key="k" * 32, identifier="alice").expire == 3600


def test_usersig_refuses_without_a_secret_key_or_with_a_bad_expiry(app_factory, db):
    app = app_factory(db)
    code, out = run(app, "usersig")
    assert code == 1 and "IM_SECRET_KEY is not set" in out
    code, out = run(app_factory(db, im_secret_key=Secret("k" * 32)), "usersig", "--expire", "0")
    assert code == 2 and "--expire" in out
