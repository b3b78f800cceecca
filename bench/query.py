"""Query benchmark (issue 7, part 4): the /v1 read endpoints on 1,000,000 dismissals and
3,000,000 member rows (a copy of the bench/seed.py template), one client, sequential requests
with one requests.Session over loopback to `gunicorn -c gunicorn.conf.py wsgi:app`.

Endpoints: GET /v1/dismissals/{id} (a different random id each time), the first page of
?status=confirmed&limit=50, the page 1,000 pages deep (reached by following next_cursor),
GET /v1/groups/{id} and GET /v1/members/{account}/dismissals (random groups and accounts).
Target: p99 ≤ 20 ms each, deep page ≤ 1.5 × the first page. Then EXPLAIN (ANALYZE) of the SQL
each endpoint runs, captured from the real query functions, to show which indexes they use.
"""

from __future__ import annotations

import random
import re
import time

import requests

from bench import common
from bench.common import log, median, pct

DB = "bench_query"
TARGET_P99_MS = 20.0


def _time(session: requests.Session, url: str) -> tuple[float, dict]:
    t = time.perf_counter()
    r = session.get(url, timeout=30)
    ms = (time.perf_counter() - t) * 1000
    r.raise_for_status()
    return ms, r.json()


def _summary(samples: list[float]) -> dict:
    return {"n": len(samples), "p50_ms": round(median(samples), 2), "p99_ms": round(pct(samples, 99), 2),
            "max_ms": round(max(samples), 2), "p99_ok": pct(samples, 99) <= TARGET_P99_MS}


def explain_all(url: str, samples: dict) -> dict:
    """EXPLAIN ANALYZE every statement the query functions run for one representative request each."""
    from sqlalchemy import event

    from receiver import queries
    from receiver.db import Database
    from receiver.schemas.api import decode_cursor

    database = Database(url)
    captured: list[tuple[str, object]] = []

    @event.listens_for(database.engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        captured.append((statement, parameters))

    calls = {
        "GET /v1/dismissals/{id}": lambda s: queries.get_dismissal(session=s, dismissal_id=samples["dismissal_id"]),
        "GET /v1/dismissals?status=confirmed&limit=50": lambda s: queries.list_dismissals(
            session=s, limit=50, status=queries.Status.CONFIRMED),
        "GET /v1/dismissals?status=confirmed&limit=50&cursor=<1000 pages deep>": lambda s: queries.list_dismissals(
            session=s, limit=50, status=queries.Status.CONFIRMED, after=decode_cursor(samples["deep_cursor"])),
        "GET /v1/groups/{id}": lambda s: queries.group_view(session=s, group_id=samples["group_id"]),
        "GET /v1/members/{account}/dismissals": lambda s: queries.member_dismissals(
            session=s, account=samples["account"], limit=50),
    }
    out = {}
    for name, call in calls.items():
        captured.clear()
        with database.session_scope() as s:
            call(s)
        statements = [(st, p) for st, p in captured if st.lstrip().upper().startswith("SELECT")]
        plans = []
        raw = database.engine.raw_connection()
        try:
            cur = raw.cursor()
            for st, params in statements:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + st, params)
                plan = "\n".join(row[0] for row in cur.fetchall())
                plans.append({
                    "sql": re.sub(r"\s+", " ", st)[:400],
                    "indexes": sorted(set(re.findall(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)"
                                                     r"(?: Backward)? (?:using|on) (\w+)", plan))),
                    "seq_scans": re.findall(r"Seq Scan on (\w+)", plan),
                    "execution_ms": float(m.group(1)) if (m := re.search(r"Execution Time: ([\d.]+)", plan)) else None,
                    "plan": plan,
                })
            raw.rollback()
        finally:
            raw.close()
        out[name] = {"statements": plans, "all_indexed": all(not p["seq_scans"] for p in plans)}
    database.dispose()
    return out


def run(args) -> dict:
    if not common.pg_available():
        raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432")
    from bench.seed import copy_of_template

    copy_of_template(DB, reseed=args.reseed)
    url = common.pg_url(DB)
    common.migrate(url)  # a no-op unless the schema moved on since the template was built
    rng = random.Random(7)
    n = args.requests
    ids = common.psql(f"SELECT id FROM dismissals TABLESAMPLE SYSTEM (0.2) LIMIT {n}", db=DB).split()
    groups = common.psql(f"SELECT group_id FROM dismissals TABLESAMPLE SYSTEM (0.2) LIMIT {n}", db=DB).split()
    accounts = [f"user{rng.randrange(200_000)}" for _ in range(n)]
    rng.shuffle(ids)
    rng.shuffle(groups)
    result: dict = {"data": {"dismissals": int(common.psql("SELECT count(*) FROM dismissals", db=DB)),
                             "group_members": int(common.psql("SELECT count(*) FROM group_members", db=DB)),
                             "callbacks": int(common.psql("SELECT count(*) FROM callbacks", db=DB))},
                    "requests_per_endpoint": n}
    port = common.free_port()
    base = f"http://127.0.0.1:{port}"
    with common.workdir(keep=args.keep) as wd, common.Processes(wd) as procs:
        env = common.service_env(url, SPOOL_DIR=str(wd / "spool"), LOG_LEVEL="WARNING")
        web = common.gunicorn(procs, "web", "wsgi:app", port, env)
        common.wait_http(f"{base}/healthz", web)
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {common.API_TOKEN}"
        from urllib.parse import quote

        endpoints = {
            "GET /v1/dismissals/{id}": [f"{base}/v1/dismissals/{i}" for i in ids],
            "GET /v1/groups/{id}": [f"{base}/v1/groups/{quote(g, safe='')}" for g in groups],
            "GET /v1/members/{account}/dismissals": [f"{base}/v1/members/{a}/dismissals" for a in accounts],
        }
        first_url = f"{base}/v1/dismissals?status=confirmed&limit=50"
        # Walk 1,000 pages by cursor (timed too: every page on the way is a "deep" page).
        log("query: following next_cursor through 1,000 pages of status=confirmed&limit=50")
        walk, cursor, body = [], None, None
        for _ in range(1000):
            ms, body = _time(s, first_url + (f"&cursor={cursor}" if cursor else ""))
            walk.append(ms)
            cursor = body["next_cursor"]
            if cursor is None:
                break
        deep_url = first_url + f"&cursor={cursor}"
        endpoints["GET /v1/dismissals?status=confirmed&limit=50 (first page)"] = [first_url] * n
        endpoints["GET /v1/dismissals?status=confirmed&limit=50 (1,000 pages deep)"] = [deep_url] * n
        for urls in endpoints.values():  # warm every endpoint up
            for u in urls[:20]:
                _time(s, u)
        timings: dict[str, list[float]] = {name: [] for name in endpoints}
        # Interleave the endpoints so a noisy second hits all of them alike.
        for i in range(n):
            for name, urls in endpoints.items():
                ms, _ = _time(s, urls[i % len(urls)])
                timings[name].append(ms)
        result["endpoints"] = {name: _summary(v) for name, v in timings.items()}
        result["cursor_walk_1000_pages"] = _summary(walk)
        first = result["endpoints"]["GET /v1/dismissals?status=confirmed&limit=50 (first page)"]
        deep = result["endpoints"]["GET /v1/dismissals?status=confirmed&limit=50 (1,000 pages deep)"]
        result["deep_over_first"] = {"p50": round(deep["p50_ms"] / first["p50_ms"], 3),
                                     "p99": round(deep["p99_ms"] / first["p99_ms"], 3)}
        result["deep_ok"] = result["deep_over_first"]["p50"] <= 1.5 and result["deep_over_first"]["p99"] <= 1.5
        for name, v in result["endpoints"].items():
            log(f"query: {name:64s} p50 {v['p50_ms']:6.2f} ms  p99 {v['p99_ms']:6.2f} ms  "
                f"{'ok' if v['p99_ok'] else 'MISSED'}")
        log(f"query: deep/first p50 {result['deep_over_first']['p50']}  p99 {result['deep_over_first']['p99']}")
    samples = {"dismissal_id": ids[0], "group_id": groups[0], "account": accounts[0], "deep_cursor": cursor}
    result["explain"] = explain_all(url, samples)
    for name, e in result["explain"].items():
        log(f"query: EXPLAIN {name}: " + "; ".join(
            f"{','.join(p['indexes']) or '-'}{' SEQ SCAN ' + ','.join(p['seq_scans']) if p['seq_scans'] else ''}"
            f" ({p['execution_ms']} ms)" for p in e["statements"]))
    if not args.keep:
        common.drop_db(DB)
    return result
