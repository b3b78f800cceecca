"""PostgreSQL's CPU per callback on the callback path's one statement, by batch size.

The ingest bench measures PostgreSQL together with everything else, and its rounds drift by a
third on these shared machines. Here each tree's own code stores batches of unique valid
callbacks through `store_unmatched` on an autocommit connection, as the group commit does, in
a freshly migrated database of its own, emptied before every run. The server process serving
that connection is read from /proc (user + system CPU) before and after `--pg-batches` batches,
so only PostgreSQL's work counts: parsing the batch's documents, the inserts, their indexes and
foreign-key checks, the commit. Trees alternate, `--pg-repeat` times each; the median is reported.

  python -m bench.pgcost                         # this tree, batches of 6 (about the ingest bench's)
  python -m bench.pgcost --compare /path/tree    # and another checkout (e.g. a git worktree)
  python -m bench.run pgcost --pg-batch 1 6 24   # per batch size

PostgreSQL must run on this machine (its processes are read from /proc). The clock tick is
10 ms: each run uses a second or more of the server's CPU, so a tick is under 1 %.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def run(args) -> dict:
    from bench import common, cost

    if not common.pg_available():
        raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432 (see README: trust auth as root)")
    trees = [common.ROOT] + [Path(t).resolve() for t in (args.compare or [])]
    databases = [f"bench_pgcost_{n}" for n in range(len(trees))]
    for tree, db in zip(trees, databases):
        common.create_db(db)
        common.migrate(common.pg_url(db), tree)
    out: dict = {"batches_per_run": args.pg_batches, "repeat": args.pg_repeat, "trees": {}}
    try:
        for size in args.pg_batch:
            runs: dict[Path, list[dict]] = {tree: [] for tree in trees}
            for _ in range(args.pg_repeat):
                for tree, db in zip(trees, databases):
                    runs[tree].append(_measure(tree, common.pg_url(db), size, args.pg_batches))
            for tree in trees:
                cpu = statistics.median(r["pg_cpu_us"] for r in runs[tree])
                wall = statistics.median(r["wall_us"] for r in runs[tree])
                entry = out["trees"].setdefault(str(tree), {"commit": cost.commit_of(tree), "per_batch_size": {}})
                entry["per_batch_size"][str(size)] = {
                    "pg_cpu_us_per_callback_median": round(cpu, 1), "wall_us_per_callback_median": round(wall, 1),
                    "pg_cpu_us_per_callback_runs": [r["pg_cpu_us"] for r in runs[tree]]}
                common.log(f"pgcost: batch {size}: {tree}: PostgreSQL {cpu:.1f} µs CPU per callback "
                           f"(runs {', '.join(str(r['pg_cpu_us']) for r in runs[tree])}), wall {wall:.1f} µs")
            if len(trees) > 1:
                base = out["trees"][str(trees[0])]["per_batch_size"][str(size)]["pg_cpu_us_per_callback_median"]
                out.setdefault("relative_to_this_tree", {})[str(size)] = {
                    str(t): round(out["trees"][str(t)]["per_batch_size"][str(size)]["pg_cpu_us_per_callback_median"]
                                  / base, 3) for t in trees[1:]}
    finally:
        for db in databases:
            common.drop_db(db)
    return out


def _measure(tree: Path, database_url: str, size: int, batches: int) -> dict:
    done = subprocess.run([sys.executable, str(HERE), "--child", str(tree), database_url, str(size), str(batches)],
                          cwd=tree, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"pgcost child failed in {tree}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(tree: str, database_url: str, size: int, batches: int) -> None:
    """In `tree`'s code: warm up, then `batches` batches of `size` callbacks; print one JSON line."""
    from bench.common import pid_cpu  # this checkout's (on the path before `tree`, below)

    sys.path.insert(0, tree)
    from receiver.callbacks.parsing import validate_body
    from receiver.callbacks.service import Accepted, RequestMeta, store_unmatched
    from receiver.db import Database
    from receiver.models import utcnow

    command = "Group.CallbackAfterGroupDestroyed"
    meta = RequestMeta(f"SdkAppid=1400000000&CallbackCommand={command}&contenttype=json&ClientIP=10.0.0.1"
                       "&OptPlatform=RESTAPI&RequestTime=1764583501", 1400000000, command, "10.0.0.1", "RESTAPI",
                       1764583501, "application/json", "127.0.0.1")
    tag, serial = f"{os.getpid()}-{time.time_ns()}", 0

    def callback() -> Accepted:  # the ingest bench's body (bench/callback.lua), each a new event
        nonlocal serial
        serial += 1
        n = serial
        raw = (f'{{"CallbackCommand":"{command}","GroupId":"@TGS#2pg-{tag}-{n}","Type":"Public",'
               f'"Owner_Account":"owner{n % 997}","Name":"bench group {n}","EventTime":{1764583501000 + n},'
               f'"MemberList":[{{"Member_Account":"owner{n % 997}"}},{{"Member_Account":"user{n * 7 % 100003}"}},'
               f'{{"Member_Account":"user{n * 13 % 100003}"}}]}}').encode()
        parsed = validate_body(raw, command)
        return Accepted(parsed.data, parsed.body, raw, meta, utcnow())

    database = Database(database_url)
    try:
        with database.batch_statement() as conn:
            # Every run starts on empty tables: an index's cost per insert grows with the index.
            conn.exec_driver_sql("TRUNCATE group_members, dismissal_attempts, dismissals, callbacks")
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            for _ in range(10):  # past psycopg's prepare threshold, and the plan cache's custom plans
                store_unmatched(conn, [callback() for _ in range(size)])
            work = [[callback() for _ in range(size)] for _ in range(batches)]  # built before the clock starts
            cpu_before, started = pid_cpu(pid), time.perf_counter()
            for batch in work:
                store_unmatched(conn, batch)
            cpu_after, ended = pid_cpu(pid), time.perf_counter()
    finally:
        database.dispose()
    count = size * batches
    print(json.dumps({"pg_cpu_us": round(1e6 * (cpu_after - cpu_before) / count, 1),
                      "wall_us": round(1e6 * (ended - started) / count, 1)}))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE.parent.parent))
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:  # `python -m bench.pgcost [--compare TREE …]` is `python -m bench.run pgcost …`
        sys.path.insert(0, str(HERE.parent.parent))
        from bench.run import main

        raise SystemExit(main(["pgcost", *sys.argv[1:]]))
