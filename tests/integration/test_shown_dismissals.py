"""List pages read dismissals as plain rows (`queries.ShownDismissal`): the documents they give
are the ORM rows' documents, value for value, for every status, source, confirmation and null."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from receiver import queries
from receiver.models import (
    FINAL_STATUSES,
    Callback,
    CallbackState,
    Confirmation,
    Dismissal,
    GroupMember,
    Source,
    Status,
    new_id,
    utcnow,
)
from receiver.schemas.api import DismissalSchema, dump_dismissal
from tests.conftest import TEST_SDKAPPID

TIMES = [None, datetime(2026, 11, 29, 20, 41, 8, 123456, tzinfo=timezone.utc),
         datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone(timedelta(hours=8)))]
TEXTS = [None, "", "中文 \"quoted\" \\ back"]


GROUP = "@TGS#shown"


def store_every_kind(db) -> list[str]:
    """One dismissal of each kind, the final ones of GROUP (a group has one open dismissal at most)."""
    rng = random.Random(20261201)
    ids = []
    with db.session_scope() as s:
        for n, (status, source, confirmation) in enumerate(
                itertools.product(Status, Source, [None, *Confirmation])):
            group_id = GROUP if status in FINAL_STATUSES else f"@TGS#open-{n}"
            callback = None
            if rng.random() < 0.7:
                callback = Callback(id=new_id(), state=CallbackState.ACCEPTED, dedupe_key=new_id(),
                                    sdkappid=TEST_SDKAPPID, command="Group.CallbackAfterGroupDestroyed",
                                    group_id=group_id, group_type=rng.choice(TEXTS[1:]),
                                    owner_account=rng.choice(TEXTS), name=rng.choice(TEXTS),
                                    member_count=rng.choice([None, 0, 3]), event_time=rng.choice(TIMES),
                                    opt_platform=rng.choice(TEXTS), query_string="a=b", raw_body=b"{}",
                                    received_at=rng.choice(TIMES[1:]), duplicates=0)
                s.add(callback)
                s.flush()
            d = Dismissal(id=new_id(), group_id=group_id, sdkappid=TEST_SDKAPPID, source=source, status=status,
                          confirmation=confirmation, reason=rng.choice(TEXTS), requested_by=rng.choice(TEXTS),
                          requested_at=rng.choice(TIMES), sent_at=rng.choice(TIMES), confirmed_at=rng.choice(TIMES),
                          attempts=rng.choice([0, 1, 8]), last_error_code=rng.choice([None, 0, 10010]),
                          last_error_info=rng.choice(TEXTS), callback_id=callback.id if callback else None)
            s.add(d)
            s.flush()
            s.add(GroupMember(dismissal_id=d.id, group_id=group_id, account="ann"))
            ids.append(d.id)
    return ids


def orm_documents(db, ids) -> list[dict]:
    with db.session_scope() as s:
        rows = s.scalars(queries.dismissals_select().where(Dismissal.id.in_(ids)).order_by(Dismissal.id.desc()))
        return [dump_dismissal(d) for d in rows]


def test_list_pages_give_the_orm_rows_documents(db):
    started = utcnow() - timedelta(seconds=1)
    ids = store_every_kind(db)
    expected = orm_documents(db, ids)
    assert len(expected) == len(ids)
    assert {d["callback"] is None for d in expected} == {True, False}
    assert {d["last_error"] is None for d in expected} == {True, False}
    with db.session_scope() as s:
        listed = queries.list_dismissals(session=s, limit=1000, since=started)
        assert all(isinstance(d, queries.ShownDismissal) for d in listed.items)
        assert DismissalSchema(many=True).dump(listed.items) == expected
        # The generic marshmallow dump (what `only`/`exclude` fall back to) reads them alike.
        assert DismissalSchema(many=True, exclude=("reason",)).dump(listed.items) == \
            [{k: v for k, v in d.items() if k != "reason"} for d in expected]
        member = queries.member_dismissals(session=s, account="ann", limit=1000)
        assert DismissalSchema(many=True).dump(member.items) == expected
        view = queries.group_view(session=s, group_id=GROUP)
        assert DismissalSchema(many=True).dump(view.dismissals) == [d for d in expected if d["group_id"] == GROUP]
        # Paged: the same rows, the cursor at the last row of each page.
        first = queries.list_dismissals(session=s, limit=5, since=started)
        assert [d.id for d in first.items] == [d["id"] for d in expected[:5]] and first.last_id == expected[4]["id"]


def test_a_dismissal_without_a_callback_row_is_shown_without_one(db):
    with db.session_scope() as s:
        s.add(Dismissal(id=new_id(), group_id="@TGS#alone", sdkappid=TEST_SDKAPPID, source=Source.API,
                        status=Status.QUEUED, attempts=0))
    with db.session_scope() as s:
        (shown,) = queries.list_dismissals(session=s, limit=10, group_id="@TGS#alone").items
        assert shown.callback is None and shown.status is Status.QUEUED and shown.source is Source.API
        assert s.scalar(select(Dismissal.callback_id).where(Dismissal.id == shown.id)) is None
