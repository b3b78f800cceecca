"""The callback path's lookups stay index probes per callback, whatever the size of the queue (PostgreSQL).

json_to_recordset is planned for 100 rows whatever the batch holds; joined to dismissals, that
made PostgreSQL hash every pending dismissal of ours for each batch of callbacks while the table
was small enough (the dispatch bench's 10,000). Checked here on the plans themselves, with
statistics fresh (ANALYZE), as a custom plan and as the generic one a prepared statement may get.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from receiver.dismissals.matching import CANDIDATES_QUERY, NO_CANDIDATE

PENDING = 10_000
PAIRS = json.dumps([{"sdkappid": 1400000001, "group_id": "plan-17"}, {"sdkappid": 1400000001, "group_id": "plan-99"}])


@pytest.fixture
def pending_queue(committed_db, backend):
    """`PENDING` dismissals of ours waiting for their callbacks, and statistics that know it."""
    if backend.name != "postgresql":
        pytest.skip("PostgreSQL's planner (SQLite's plans these lookups per row by itself)")
    with committed_db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO dismissals (id, group_id, sdkappid, source, status, requested_at, next_attempt_at,"
            " attempts, probes, redispatches, updated_at)"
            " SELECT lpad(i::text, 26, '0'), 'plan-' || i, 1400000001, 'api', 'awaiting_callback', now(), now(),"
            " 1, 0, 0, now() FROM generate_series(1, :n) AS i"), {"n": PENDING})
        conn.execute(text("ANALYZE dismissals"))
    yield committed_db
    with committed_db.engine.begin() as conn:
        conn.execute(text("DELETE FROM dismissals"))
        conn.execute(text("ANALYZE dismissals"))  # later tests plan for the table they find


def _plans(database, sql: str) -> list[str]:
    """EXPLAIN of `sql` (one %s parameter, PAIRS): its custom plan and its generic plan."""
    with database.engine.connect() as conn:
        custom = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, (PAIRS,)))
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("PREPARE plan_check(text) AS " + sql.replace("%s", "$1"))
        # EXECUTE takes no bound parameter: the test's own constant, written as a literal.
        generic = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN EXECUTE plan_check('{PAIRS}')"))
        conn.exec_driver_sql("DEALLOCATE plan_check")
        conn.exec_driver_sql("RESET plan_cache_mode")
        conn.rollback()
    return [custom, generic]


def _reads_the_whole_queue(plan: str) -> bool:
    return "Seq Scan on dismissals" in plan or "ix_dismissals_source_id" in plan


def test_candidates_are_looked_up_by_group_not_read_from_the_whole_queue(pending_queue):
    for plan in _plans(pending_queue, CANDIDATES_QUERY["postgresql"]):
        assert not _reads_the_whole_queue(plan), plan
        assert "ix_dismissals_group_id_id" in plan, plan


def test_the_no_candidate_check_is_a_probe_per_callback(pending_queue):
    sql = ("SELECT batch.group_id FROM json_to_recordset(%s::json) AS batch(sdkappid bigint, group_id text)"
           " WHERE " + NO_CANDIDATE)
    for plan in _plans(pending_queue, sql):
        assert not _reads_the_whole_queue(plan), plan
        assert "ix_dismissals_group_id_id" in plan, plan


def test_the_candidates_query_still_finds_and_locks_the_right_rows_on_a_long_queue(pending_queue):
    with pending_queue.batch_transaction() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(CANDIDATES_QUERY["postgresql"], (PAIRS,))]
        locked = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND pid = pg_backend_pid()").scalar_one()
    assert [r[1] for r in rows] == ["plan-17", "plan-99"]
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    assert locked == 1  # the row locks took this transaction's id: the rows are locked
