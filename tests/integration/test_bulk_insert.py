"""bulk_insert stores exactly what the ORM would, on both backends, or refuses like it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from receiver.models import Callback, CallbackState, Dismissal, GroupMember, Source, Status, new_id
from receiver.sqlutil import bulk_insert, bulk_insert_and_query, bulk_insert_chain, bulk_insert_linked
from tests.conftest import TEST_SDKAPPID

WHEN = datetime(2026, 11, 29, 23, 59, 59, 123456, tzinfo=timezone.utc)


def callback_row(key: str, **over) -> dict:
    row = dict(id=new_id(), state=CallbackState.ACCEPTED, dedupe_key=key, sdkappid=TEST_SDKAPPID,
               command="Group.CallbackAfterGroupDestroyed", group_id=f"g-{key}", name=None,
               event_time=WHEN, query_string="a=b", raw_body=b"{}", received_at=WHEN, duplicates=0)
    row.update(over)
    return row


def test_values_round_trip_exactly(db):
    raw = bytes(range(256)) + b'\\x00"\\\\ \xe4\xbd\xa0'  # every byte value, quotes and backslashes
    row = callback_row("k1", raw_body=raw, name='quote " backslash \\ tab \t 你好 \U0001f600',
                       event_time=WHEN.astimezone(timezone(timedelta(hours=8))), sdkappid=2**40 + 7)
    given = dict(row)
    with db.session_scope() as session:
        got = bulk_insert(session.connection(), Callback.__table__, [row], skip_conflicts="dedupe_key",
                          returning=("dedupe_key", "id"))
        assert got == [("k1", row["id"])]
    assert row == given  # the caller's row is not converted in place
    with db.session_scope() as session:
        stored = session.get(Callback, row["id"])
        assert stored.raw_body == raw
        assert stored.name == row["name"]
        assert stored.event_time == WHEN and stored.received_at == WHEN
        assert stored.sdkappid == 2**40 + 7 and stored.state is CallbackState.ACCEPTED
        assert stored.owner_account is None and stored.duplicates == 0


def test_conflicting_rows_are_skipped_and_not_returned(db):
    first = callback_row("dup")
    with db.session_scope() as session:
        bulk_insert(session.connection(), Callback.__table__, [first], skip_conflicts="dedupe_key")
    again = [callback_row("dup"), callback_row("new")]
    with db.session_scope() as session:
        got = bulk_insert(session.connection(), Callback.__table__, again, skip_conflicts="dedupe_key",
                          returning=("dedupe_key", "id"))
    assert got == [("new", again[1]["id"])]
    with db.session_scope() as session:
        assert session.scalar(select(Callback.id).where(Callback.dedupe_key == "dup")) == first["id"]


def test_a_value_too_long_for_its_column_is_refused_not_truncated(db, backend):
    if backend.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths (the endpoint caps them before storing)")
    with pytest.raises(DBAPIError), db.session_scope() as session:
        bulk_insert(session.connection(), Callback.__table__, [callback_row("long", group_id="x" * 201)])


def test_datetimes_of_any_zone_and_whole_seconds_keep_their_instant(db):
    """The JSON document spells datetimes as given (orjson: offset kept, no fraction for a whole
    second); each is read back as the same instant in UTC."""
    shanghai = WHEN.replace(microsecond=0).astimezone(ZoneInfo("Asia/Shanghai"))
    west = WHEN.astimezone(timezone(-timedelta(hours=9, minutes=30)))
    row = callback_row("zones", event_time=shanghai, received_at=west)
    with db.session_scope() as session:
        bulk_insert(session.connection(), Callback.__table__, [row])
    with db.session_scope() as session:
        stored = session.get(Callback, row["id"])
        assert stored.event_time == WHEN.replace(microsecond=0) and stored.event_time.tzinfo == timezone.utc
        assert stored.received_at == WHEN and stored.received_at.utcoffset() == timedelta(0)


def test_a_naive_datetime_is_refused(db):
    with pytest.raises((ValueError, DBAPIError)), db.session_scope() as session:
        bulk_insert(session.connection(), Callback.__table__, [callback_row("naive", received_at=datetime(2026, 1, 1))])


def test_many_rows_in_one_call(db):
    """More rows than SQLite takes variables in one statement: split, and all come back."""
    rows = [callback_row(f"m{i}") for i in range(1500)]  # 1500 × 12 columns > 16,383
    with db.session_scope() as session:
        got = bulk_insert(session.connection(), Callback.__table__, rows, skip_conflicts="dedupe_key",
                          returning=("id",))
    assert sorted(r[0] for r in got) == sorted(r["id"] for r in rows)


def test_enum_and_nullable_columns_of_dismissals(db):
    rows = [dict(id=new_id(), group_id=f"g{i}", sdkappid=TEST_SDKAPPID, source=Source.EXTERNAL,
                 status=Status.CONFIRMED, confirmation=None, confirmed_at=WHEN if i else None, attempts=0,
                 probes=0, redispatches=0, updated_at=WHEN) for i in range(3)]
    with db.session_scope() as session:
        assert bulk_insert(session.connection(), Dismissal.__table__, rows) == []
    with db.session_scope() as session:
        got = {d.group_id: d for d in session.scalars(select(Dismissal))}
    assert got["g0"].confirmed_at is None and got["g2"].confirmed_at == WHEN
    assert all(d.status is Status.CONFIRMED and d.source is Source.EXTERNAL for d in got.values())


def test_datetimes_are_spelled_as_the_orm_spells_them(db, backend):
    """On SQLite datetimes are strings compared as text: ours must match the ORM's exactly."""
    on_the_second = WHEN.replace(microsecond=0)
    with db.session_scope() as session:
        bulk_insert(session.connection(), Callback.__table__, [callback_row("raw", received_at=on_the_second)])
        session.add(Callback(**callback_row("orm", received_at=on_the_second)))
    with db.session_scope() as session:
        spelled = session.connection().exec_driver_sql(
            "SELECT dedupe_key, CAST(received_at AS TEXT) FROM callbacks ORDER BY dedupe_key").all()
    assert spelled[0][1] == spelled[1][1], spelled


def test_a_chain_inserts_every_table_and_checks_references(db, backend):
    cb = callback_row("chain")
    d = dict(id=new_id(), group_id="g-chain", sdkappid=TEST_SDKAPPID, source=Source.EXTERNAL,
             status=Status.CONFIRMED, callback_id=cb["id"], confirmed_at=WHEN, attempts=0, probes=0,
             redispatches=0, updated_at=WHEN)
    members = [dict(dismissal_id=d["id"], group_id="g-chain", account=a) for a in "abc"]
    with db.session_scope() as session:
        bulk_insert_chain(session.connection(), [(Callback.__table__, [cb]), (Dismissal.__table__, [d]),
                                                 (GroupMember.__table__, members), (Dismissal.__table__, [])])
    with db.session_scope() as session:
        assert session.get(Dismissal, d["id"]).status is Status.CONFIRMED
        assert sorted(session.scalars(select(GroupMember.account).where(GroupMember.dismissal_id == d["id"]))) == \
            ["a", "b", "c"]
    orphan = dict(members[0], dismissal_id="no-such-dismissal")
    with pytest.raises(DBAPIError), db.session_scope() as session:
        # The member refers to a dismissal that is neither stored nor earlier in the chain.
        bulk_insert_chain(session.connection(), [(Dismissal.__table__, [dict(d, id=new_id())]),
                                                 (GroupMember.__table__, [orphan])])


def test_insert_and_query_return_each_side_with_its_own_columns(db, backend):
    """One statement on PostgreSQL (two on SQLite): the INSERT's returned rows, then the query's rows."""
    stored = callback_row("q-old")
    with db.session_scope() as session:
        bulk_insert(session.connection(), Callback.__table__, [stored])
    rows = [callback_row("q-new"), callback_row("q-old")]  # the second is a conflict: skipped
    query = ("SELECT dedupe_key, received_at, duplicates FROM callbacks WHERE dedupe_key LIKE 'q-%%' ORDER BY dedupe_key"
             if backend.name == "postgresql" else
             "SELECT dedupe_key, received_at, duplicates FROM callbacks WHERE dedupe_key LIKE ? ORDER BY dedupe_key")
    params = () if backend.name == "postgresql" else ("q-%",)
    with db.session_scope() as session:
        inserted, queried = bulk_insert_and_query(
            session.connection(), Callback.__table__, rows, skip_conflicts="dedupe_key", returning=("dedupe_key", "id"),
            query=query, params=params, query_width=3)
    assert inserted == [("q-new", rows[0]["id"])]
    # The query sees the table as it was before the statement on PostgreSQL (one statement), after
    # the INSERT on SQLite (two); either way in its own columns and types.
    expected = ["q-old"] if backend.name == "postgresql" else ["q-new", "q-old"]
    assert [key for key, _, _ in queried] == expected
    assert all(len(r) == 3 and r[2] == 0 for r in queried)
    with db.session_scope() as session:
        assert sorted(session.scalars(select(Callback.dedupe_key))) == ["q-new", "q-old"]


def test_insert_and_query_with_nothing_to_insert_still_runs_the_query(db, backend):
    query = ("SELECT %s::text" if backend.name == "postgresql" else "SELECT ?")
    with db.session_scope() as session:
        inserted, queried = bulk_insert_and_query(session.connection(), Callback.__table__, [],
                                                  skip_conflicts="dedupe_key", returning=("id",), query=query,
                                                  params=("asked",), query_width=1)
    assert inserted == [] and queried == [("asked",)]


def test_a_driver_error_arrives_as_sqlalchemys_without_the_rows_in_its_message(db, backend):
    """The PostgreSQL statements run on the DBAPI cursor; their errors must still be SQLAlchemy's."""
    if backend.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths (the endpoint caps them before storing)")
    secret_body = b'{"GroupId": "do-not-log-me"}'
    row = callback_row("too-long", group_id="x" * 201, raw_body=secret_body)
    with pytest.raises(DBAPIError) as caught, db.session_scope() as session:
        bulk_insert_and_query(session.connection(), Callback.__table__, [row], skip_conflicts="dedupe_key",
                              returning=("id",), query="SELECT 1", params=(), query_width=1)
    assert isinstance(caught.value.orig, Exception) and not caught.value.connection_invalidated
    assert "value too long" in str(caught.value)
    assert secret_body.hex() not in str(caught.value)  # the rows' JSON document is not in the message


def linked_rows(key: str, group_id: str | None = None) -> tuple[dict, dict, list[dict]]:
    cb = callback_row(key, group_id=group_id or f"g-{key}")
    d = dict(id=new_id(), group_id=cb["group_id"], sdkappid=TEST_SDKAPPID, source=Source.EXTERNAL,
             status=Status.CONFIRMED, callback_id=cb["id"], confirmed_at=WHEN, attempts=0, probes=0,
             redispatches=0, updated_at=WHEN)
    members = [dict(dismissal_id=d["id"], group_id=cb["group_id"], account=a) for a in "ab"]
    return cb, d, members


def insert_linked(session, parts, only_if="true"):
    return bulk_insert_linked(
        session.connection(), Callback.__table__, [cb for cb, _, _ in parts], skip_conflicts="dedupe_key",
        only_if=only_if, key="id", dependents=[(Dismissal.__table__, [d for _, d, _ in parts], "callback_id"),
                                               (GroupMember.__table__, [m for _, _, ms in parts for m in ms],
                                                "dismissal_id")])


def test_linked_rows_go_in_with_the_row_they_point_at_or_not_at_all(db, backend):
    if backend.name != "postgresql":
        pytest.skip("bulk_insert_linked is PostgreSQL's (the one-statement path)")
    stored = linked_rows("l-stored")
    with db.session_scope() as session:
        assert insert_linked(session, [stored]) == [stored[0]["id"]]
    fresh, again, refused = linked_rows("l-fresh"), linked_rows("l-stored"), linked_rows("l-refused", "no-thanks")
    with db.session_scope() as session:
        # A conflict (l-stored again) and a row the condition refuses are skipped with what points at them.
        got = insert_linked(session, [fresh, again, refused], only_if="batch.group_id <> 'no-thanks'")
    assert got == [fresh[0]["id"]]
    with db.session_scope() as session:
        assert sorted(session.scalars(select(Callback.dedupe_key))) == ["l-fresh", "l-stored"]
        assert set(session.scalars(select(Dismissal.callback_id))) == {stored[0]["id"], fresh[0]["id"]}
        # Each member went in with the dismissal it points at, and only with it.
        assert sorted(session.scalars(select(GroupMember.dismissal_id))) == sorted([stored[1]["id"]] * 2 +
                                                                                   [fresh[1]["id"]] * 2)


def test_linked_rows_are_one_statement_all_or_nothing(db, backend):
    if backend.name != "postgresql":
        pytest.skip("bulk_insert_linked is PostgreSQL's (the one-statement path)")
    good, bad = linked_rows("l-good"), linked_rows("l-bad")
    bad[2][0]["account"] = "x" * 1000  # too long for its column: the last table's insert fails
    with pytest.raises(DBAPIError, match="value too long"), db.session_scope() as session:
        insert_linked(session, [good, bad])
    nobody = linked_rows("l-nobody")
    with db.session_scope() as session:  # no dependents' rows at all: the same statement, empty documents
        got = bulk_insert_linked(session.connection(), Callback.__table__, [nobody[0]], skip_conflicts="dedupe_key",
                                 only_if="true", key="id", dependents=[(Dismissal.__table__, [], "callback_id")])
    assert got == [nobody[0]["id"]]
    with db.session_scope() as session:
        assert list(session.scalars(select(Callback.dedupe_key))) == ["l-nobody"]
        assert session.scalar(select(func.count()).select_from(GroupMember)) == 0
