"""DismissalSchema's written-out dump gives exactly what marshmallow's generic dump gives."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import Schema

from receiver.models import Callback, Confirmation, Dismissal, Source, Status
from receiver.schemas.api import DismissalItemsSchema, DismissalPageSchema, DismissalSchema, GroupSchema

UTC = timezone.utc
TIMES = [None, datetime(2026, 11, 29, 20, 41, 8, 123456, tzinfo=UTC),
         datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),  # years before 1000 keep four digits
         datetime(2026, 12, 1, 8, 0, 0, 999999, tzinfo=timezone(timedelta(hours=8)))]  # another zone: converted
TEXTS = [None, "", "plain", "中文 ✓ \"quoted\" \\ back"]


def generic(schema: Schema, obj, many: bool = False):
    """marshmallow's own dump, with the schema's pre_dump, bypassing DismissalSchema's override."""
    return Schema.dump(schema, obj, many=many)


def callback(rng: random.Random) -> Callback | None:
    if rng.random() < 0.25:
        return None
    return Callback(id="01JCALLBACK0000000000000000"[:26], event_time=rng.choice(TIMES), group_type=rng.choice(TEXTS),
                    owner_account=rng.choice(TEXTS), name=rng.choice(TEXTS),
                    member_count=rng.choice([None, 0, 3, 2000]), opt_platform=rng.choice(TEXTS),
                    received_at=rng.choice(TIMES[1:]))


def dismissal(rng: random.Random, status: Status, source: Source, confirmation: Confirmation | None) -> Dismissal:
    code = rng.choice([None, 0, 10010, -1, 2**31 - 1])
    return Dismissal(
        id="01JDISMISSAL00000000000000"[:26], group_id=rng.choice(["@TGS#2J4SZEAEL", "g", "x" * 48]),
        sdkappid=rng.choice([1400000000, 0, 2**40]), source=source, status=status, confirmation=confirmation,
        reason=rng.choice(TEXTS), requested_by=rng.choice(TEXTS), requested_at=rng.choice(TIMES),
        sent_at=rng.choice(TIMES), confirmed_at=rng.choice(TIMES), attempts=rng.choice([0, 1, 8]),
        last_error_code=code, last_error_info=rng.choice(TEXTS), callback=callback(rng),
    )


def every_kind() -> list[Dismissal]:
    rng = random.Random(20261201)
    rows = []
    for status, source, confirmation in itertools.product(Status, Source, [None, *Confirmation]):
        rows += [dismissal(rng, status, source, confirmation) for _ in range(4)]
    return rows


ROWS = every_kind()


def test_the_matrix_reaches_every_branch():
    assert {d.last_error_code is None for d in ROWS} == {True, False}
    assert {d.callback is None for d in ROWS} == {True, False}
    assert {d.last_error_info is None for d in ROWS if d.last_error_code is not None} == {True, False}


@pytest.mark.parametrize("row", ROWS, ids=lambda d: f"{d.status.value}-{d.source.value}-{d.confirmation}")
def test_one_document_equals_the_generic_dump(row):
    schema = DismissalSchema()
    assert schema.dump(row) == generic(schema, row)


def test_documents_in_pages_items_and_groups_equal_the_generic_dump():
    page = {"items": ROWS, "next_cursor": "abc"}
    assert DismissalPageSchema().dump(page) == generic(DismissalPageSchema(), page)
    assert DismissalItemsSchema().dump({"items": ROWS}) == generic(DismissalItemsSchema(), {"items": ROWS})
    group = {"group_id": "g", "dismissals": ROWS[:7], "members": ["a", "b"]}
    assert GroupSchema().dump(group) == generic(GroupSchema(), group)
    assert DismissalSchema(many=True).dump(iter(ROWS)) == generic(DismissalSchema(), ROWS, many=True)


def test_times_are_utc_with_milliseconds_and_z():
    row = dismissal(random.Random(1), Status.CONFIRMED, Source.API, Confirmation.CALLBACK)
    row.requested_at = TIMES[3]
    row.sent_at = TIMES[2]
    assert DismissalSchema().dump(row)["requested_at"] == "2026-12-01T00:00:00.999Z"
    assert DismissalSchema().dump(row)["sent_at"] == "0999-01-02T03:04:05.000Z"


def test_only_and_exclude_take_the_generic_way():
    row = ROWS[0]
    assert DismissalSchema(only=("id", "status")).dump(row) == {"id": row.id, "status": row.status.value}
    assert "reason" not in DismissalSchema(exclude=("reason",)).dump(row)
