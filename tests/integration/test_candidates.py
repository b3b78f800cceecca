"""The candidate query of a callback batch: our open dismissals of exactly the batch's (app, group) pairs."""

from __future__ import annotations

from receiver.dismissals.matching import CANDIDATES_QUERY, candidates_params, candidates_from_rows
from receiver.dismissals.service import request_batch

OTHER_APP = 1400000999


def test_only_the_pairs_asked_for_come_back_each_once_in_id_order(committed_db, backend):
    ids = {}
    with committed_db.session_scope() as s:
        for app in (1400000001, OTHER_APP):
            for group in ("cand-1", "cand-2"):
                ids[(app, group)] = request_batch(s, sdkappid=app, group_ids=[group])[0].dismissal.id
    pairs = [(1400000001, "cand-1"), (OTHER_APP, "cand-2"), (1400000001, "cand-1"), (1400000001, "no-such-group")]
    with committed_db.batch_transaction() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(CANDIDATES_QUERY[conn.dialect.name], candidates_params(pairs))]
        found = candidates_from_rows(conn.dialect, rows)
    # (1400000001, cand-2) and (OTHER_APP, cand-1) share an app or a group with a pair asked for,
    # but are not one: they are neither returned nor (on PostgreSQL) locked.
    assert [r[2] for r in rows] == sorted([ids[(1400000001, "cand-1")], ids[(OTHER_APP, "cand-2")]])
    assert {k: [c.id for c in v] for k, v in found.items()} == {
        (1400000001, "cand-1"): [ids[(1400000001, "cand-1")]], (OTHER_APP, "cand-2"): [ids[(OTHER_APP, "cand-2")]]}


def test_a_group_id_with_quotes_and_backslashes_is_matched_as_it_is(committed_db, backend):
    group = 'g"\\\'{-1}'
    with committed_db.session_scope() as s:
        wanted = request_batch(s, sdkappid=1400000001, group_ids=[group])[0].dismissal.id
    with committed_db.batch_transaction() as conn:
        rows = list(conn.exec_driver_sql(CANDIDATES_QUERY[conn.dialect.name], candidates_params([(1400000001, group)])))
    assert [r[2] for r in rows] == [wanted]
