"""Ingest benchmark (issue 7, parts 1 and 2).

Alternating rounds, each target loaded by the same wrk command, all served by the same
`gunicorn -c gunicorn.conf.py` (2 gthread workers × 32 threads unless WEB_CONCURRENCY /
GUNICORN_THREADS say otherwise):

  bare     bench/bare_app.py: parse the JSON body, answer the OK envelope
  pg       the receiver's /im/callback on an empty PostgreSQL database (emptied before each round)
  pg_1m    the same on a copy of the 1,000,000-callback seed (bench/seed.py)      [growth]
  sqlite   the same on SQLite (WAL), emptied before each round                     [--no-sqlite]

Each request is a unique, valid, signed Group.CallbackAfterGroupDestroyed (bench/callback.lua);
every receiver answer is 200 only after the callback is committed, and the bench checks that the
rows stored match the requests answered. Figures: requests/s of each, the median over rounds of
the per-round ratio receiver/bare, p50/p99 latency of the receiver, and growth = ratio(pg_1m) /
ratio(pg). Then one more pg round under py-spy (if installed) for where the time goes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench import common
from bench.common import log, median

LUA = Path(__file__).with_name("callback.lua")
MAX_ATTEMPTS = 3  # per target and round, while the rounds come out lopsided (`lopsided`)
WRK_HINT = ("wrk is not installed. It is the load generator of this benchmark (from Debian's packages): "
            "`apt-get install -y wrk` (run `apt-get update` first on a fresh machine).")


def signed_query(request_time: int | None = None) -> str:
    import hashlib

    rt = str(int(time.time()) if request_time is None else request_time)
    sign = hashlib.sha256((common.CALLBACK_TOKEN + rt).encode()).hexdigest()
    return (f"SdkAppid={common.SDKAPPID}&CallbackCommand=Group.CallbackAfterGroupDestroyed&contenttype=json"
            f"&ClientIP=10.0.0.1&OptPlatform=RESTAPI&Sign={sign}&RequestTime={rt}")




def _processes():
    """(pid, command name, parent pid, CPU seconds used so far) of every live process (/proc)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (stat := common.process_stat(pid)) is not None:
            yield int(pid), *stat


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds used so far: the whole machine (busy), and live processes grouped by name."""
    out: dict[str, float] = {"machine_busy": common.machine_busy_cpu(), "gunicorn": 0.0, "postgres": 0.0, "wrk": 0.0}
    for _pid, comm, _ppid, used in _processes():
        if comm.startswith("postgres"):
            out["postgres"] += used
        elif comm == "wrk":
            out["wrk"] += used
        elif comm.startswith("gunicorn") or "gunicorn" in comm:
            out["gunicorn"] += used
    return out


def worker_cpu(master_pid: int) -> dict[int, float]:
    """CPU seconds used so far by each child of gunicorn's master (its workers), by pid."""
    return {pid: used for pid, _comm, ppid, used in _processes() if ppid == master_pid}


# A round in which the busiest worker did more than this share of the CPU all workers did, for
# 2 workers (1.5 / workers in general: 0.75 of 2), ran on fewer cores than the configuration has.
LOPSIDED = 1.5


def busiest_worker_share(before: dict[int, float], after: dict[int, float]) -> float | None:
    """The busiest worker's share of the CPU the workers used between two `worker_cpu` readings.

    None when there is nothing to compare: fewer than two workers, or no CPU used.
    """
    used = [after[pid] - before.get(pid, 0.0) for pid in after]
    if len(used) < 2 or sum(used) <= 0:
        return None
    return max(used) / sum(used)


def lopsided(share: float | None, workers: int) -> bool:
    """Whether wrk's connections landed so unevenly that one worker did most of the round alone.

    gunicorn's workers share one listening socket and each keeps the connections it accepted:
    wrk opens all of its connections at once, and now and then one worker accepts nearly all of
    them, so the round measures one core's worth of workers (the bare handler at half its rate).
    """
    return share is not None and workers > 1 and share > LOPSIDED / workers


def cpu_ms_per_request(before: dict, after: dict, requests: int) -> dict:
    d = {k: after[k] - before[k] for k in before}
    d["other_or_exited"] = d["machine_busy"] - d["gunicorn"] - d["postgres"] - d["wrk"]
    return {k: round(1000 * v / max(requests, 1), 3) for k, v in d.items()}


def run_wrk(port: int, *, seconds: float, connections: int, threads: int, prefix: str,
            master_pid: int | None = None) -> dict:
    """One wrk run against /im/callback; a fresh RequestTime is signed for every run.

    With `master_pid`, also the busiest worker's share of the workers' CPU (`worker_share`).
    """
    env = {**os.environ, "BENCH_QUERY": signed_query(), "BENCH_PREFIX": prefix,
           "BENCH_EVENT_MS": str(int(time.time() * 1000))}
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s",
            "-s", str(LUA), f"http://127.0.0.1:{port}"]
    workers_before = worker_cpu(master_pid) if master_pid else {}
    cpu_before = cpu_snapshot()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    cpu_after = cpu_snapshot()
    workers_after = worker_cpu(master_pid) if master_pid else {}
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    res = json.loads(line[len("BENCH_RESULT "):])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["cpu_ms_per_request"] = cpu_ms_per_request(cpu_before, cpu_after, res["requests"])
    res["errors"] = res["non2xx"] + res["connect_errors"] + res["read_errors"] + res["write_errors"] + res["timeouts"]
    if master_pid:
        res["workers"] = len(workers_after)
        share = busiest_worker_share(workers_before, workers_after)
        res["worker_share"] = None if share is None else round(share, 3)
    return res


class Target:
    def __init__(self, name: str, app: str, database_url: str | None, kind: str, *, env: dict | None = None,
                 diagnostic: str | None = None, tree: Path = common.ROOT) -> None:
        self.name, self.app, self.database_url, self.kind = name, app, database_url, kind
        self.env = env or {}
        self.diagnostic = diagnostic
        self.tree = tree  # the checkout it is served from (`--compare`)
        self.port = common.free_port()
        self.proc = None
        self.rounds: list[dict] = []

    # what the database holds: callbacks stored (to check that every 200 was a commit)
    def stored(self) -> int | None:
        if self.kind == "pg":
            return int(common.psql("SELECT count(*) FROM callbacks", db=self.database_url.rsplit("/", 1)[1]))
        if self.kind == "sqlite":
            with sqlite3.connect(self.database_url[len("sqlite:///"):], timeout=30) as c:
                return c.execute("SELECT count(*) FROM callbacks").fetchone()[0]
        return None

    @property
    def db(self) -> str | None:
        return self.database_url.rsplit("/", 1)[1] if self.kind == "pg" else None

    def sessions(self) -> int | None:
        """Connections ever opened to this database (pg_stat_database.sessions): pool churn."""
        if self.kind != "pg":
            return None
        return int(common.psql(f"SELECT sessions FROM pg_stat_database WHERE datname = '{self.db}'"))

    def empty(self) -> None:
        if self.kind == "pg":
            common.psql("TRUNCATE group_members, dismissal_attempts, dismissals, callbacks",
                        db=self.database_url.rsplit("/", 1)[1])
        elif self.kind == "sqlite":
            with sqlite3.connect(self.database_url[len("sqlite:///"):], timeout=30) as c:
                for t in ("group_members", "dismissal_attempts", "dismissals", "callbacks"):
                    c.execute(f"DELETE FROM {t}")
            with sqlite3.connect(self.database_url[len("sqlite:///"):], timeout=30) as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def profile(target: Target, procs: common.Processes, workdir: Path, *, seconds: int, connections: int,
            threads: int) -> dict:
    """Two py-spy runs under load: wall time of request threads, and only samples holding the GIL
    (where the Python CPU goes: the workers use ~10× the bare app's CPU per request)."""
    return {"wall": _profile(target, workdir, "wall", seconds=seconds, connections=connections, threads=threads),
            "gil": _profile(target, workdir, "gil", seconds=seconds, connections=connections, threads=threads)}


def _profile(target: Target, workdir: Path, mode: str, *, seconds: int, connections: int, threads: int) -> dict:
    """Sample the receiver's gunicorn workers with py-spy while wrk loads it; aggregate the stacks."""
    pyspy = shutil.which("py-spy") or str(common.BIN / "py-spy")
    if not os.path.exists(pyspy):
        return {"skipped": "py-spy is not installed (`.venv/bin/pip install py-spy`)"}
    raw = workdir / f"pyspy-{mode}.txt"
    spy = subprocess.Popen([pyspy, "record", "--pid", str(target.proc.pid), "--subprocesses", "--nonblocking",
                            *(["--gil"] if mode == "gil" else []),
                            "--format", "raw", "--rate", "200", "--duration", str(seconds + 2), "-o", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)
    load = run_wrk(target.port, seconds=seconds, connections=connections, threads=threads, prefix=f"prof{mode}")
    try:
        _, err = spy.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not raw.exists():
        return {"skipped": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    return {"load_rps": round(load["rps"], 1), **aggregate_stacks(raw.read_text().splitlines())}


# Buckets of where a request's time goes, by the innermost frame that matches (first match wins,
# scanning from the leaf up).
BUCKETS = [
    ("database round trips (psycopg execute/commit, waiting on PostgreSQL)", ("psycopg/", "psycopg_binary", "_sqlite3", "sqlite3/")),
    ("SQLAlchemy (compile, ORM flush/unit of work, result rows)", ("sqlalchemy/",)),
    ("marshmallow validation", ("marshmallow/",)),
    ("logging (format + write)", ("logging/", "receiver/logs.py")),
    ("prometheus metrics", ("prometheus_client/",)),
    ("JSON parse/encode", ("json/",)),
    ("werkzeug/flask request handling", ("werkzeug/", "flask/")),
    ("gunicorn (accept, parse HTTP, write)", ("gunicorn/",)),
    ("receiver code (own frames)", ("receiver/",)),
]


# Inclusive shares of request time by what a thread was doing (a sample may count in several).
PHASES = {
    "pool checkout (total)": "_checkout (sqlalchemy/pool",
    "  pool_pre_ping round trip": "_do_ping_w_event",
    "  opening new connections (overflow churn)": "connect (psycopg/connection.py",
    "cursor.execute (all statements)": "execute (psycopg/cursor.py",
    "cursor.executemany (members)": "executemany (psycopg/cursor.py",
    "ORM flush (external dismissal INSERT)": "flush (sqlalchemy/orm/session.py",
    "COMMIT (WAL flush wait)": "commit (psycopg/connection.py",
    "SQL compile / cache key": "_generate_cache_key",
    "logging": "callHandlers (logging",
    "new_id (ULID)": "new_id (",
    "marshmallow": "marshmallow/",
    "prometheus": "prometheus_client/",
}


def aggregate_stacks(lines: list[str]) -> dict:
    """py-spy raw (collapsed) stacks → self time by function, inclusive time by receiver function, buckets."""
    total = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    request_samples = 0
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        # Only samples inside a request handler count (idle threads waiting in select/locks don't):
        # the callback endpoint (served outside Flask), or a Flask view.
        if not any("CallbackEndpoint.__call__" in f or "full_dispatch_request" in f for f in frames):
            continue
        request_samples += n
        leaf = frames[-1]
        self_time[_short(leaf)] += n
        for f in set(frames):
            if "receiver/" in f or "bench/" in f:
                inclusive[_short(f)] += n
        for f in {_short(f).split(":")[0] + ")" for f in frames if "receiver/" in f}:
            functions[f] += n
        for phase, key in PHASES.items():
            if key in line:
                phases[phase] += n
        for f in reversed(frames):
            hit = next((name for name, keys in BUCKETS if any(k in f for k in keys)), None)
            if hit:
                buckets[hit] += n
                break
        else:
            buckets["other"] += n
        total += n
    if not total:
        return {"samples": 0}
    share = lambda c: [(k, round(100 * v / total, 1)) for k, v in c.most_common(15)]  # noqa: E731
    return {"samples": total, "phases_inclusive_pct": [(k, round(100 * phases[k] / total, 1)) for k in PHASES],
            "buckets_pct": share(buckets), "self_pct": share(self_time),
            "receiver_functions_inclusive_pct": share(functions), "receiver_lines_inclusive_pct": share(inclusive)}


def _short(frame: str) -> str:
    # "func (path/to/site-packages/pkg/mod.py:123)" → "func (pkg/mod.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def measure(t: Target, args, prefix: str) -> dict:
    """One wrk run against target `t`, with the check that every 200 it answered was stored."""
    if t.name != "pg_1m":
        t.empty()
    if t.kind == "pg":
        # Each idle receiver keeps 2 × pool_size connections; close the other targets'
        # idle ones (they reconnect through pool_pre_ping) so that max_connections=100
        # is never what limits the target under load.
        common.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    f"WHERE datname LIKE 'bench_ingest%' AND datname <> '{t.db}' AND state = 'idle'")
    before = t.stored()
    sessions_before = t.sessions()
    res = run_wrk(t.port, seconds=args.seconds, connections=args.connections, threads=args.wrk_threads,
                  prefix=prefix, master_pid=t.proc.pid)
    if before is not None:
        time.sleep(0.3)
        ok = res["requests"] - res["errors"]
        res["stored"] = first = t.stored() - before
        # A callback that waited too long for SQLite's write lock (or the database) was
        # answered from the local spool; the drainer stores it within seconds.
        deadline = time.monotonic() + 15
        while res["stored"] < ok and time.monotonic() < deadline:
            time.sleep(0.5)
            res["stored"] = t.stored() - before
        res["stored_after_the_run"] = res["stored"] - first
        # every 200 must be a committed row (a few rows may be committed after wrk stopped counting)
        res["answered_not_in_db"] = max(ok - res["stored"], 0)
        if sessions_before is not None:
            res["new_connections_per_100_requests"] = round(
                100 * (t.sessions() - sessions_before) / max(res["requests"], 1), 1)
        res["stored_check"] = ("ok" if 0 <= res["stored"] - ok <= args.connections
                               else f"{ok - res['stored']} answered but not in the database")
    return res


def run(args) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_HINT)
    if not common.pg_available():
        raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432 (see README: trust auth as root)")
    results: dict = {"settings": {
        "rounds": args.rounds, "seconds": args.seconds, "connections": args.connections, "wrk_threads": args.wrk_threads,
        "gunicorn": f"gunicorn -c gunicorn.conf.py (WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '2')}, "
                    f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', '32')})",
        "callback_skew": "default IM_CALLBACK_MAX_SKEW_SECONDS=60; a fresh RequestTime is signed for every wrk run",
    }}
    with common.workdir(keep=args.keep) as wd, common.Processes(wd) as procs:
        targets = [Target("bare", "bench.bare_app:app", None, "bare")]
        common.create_db("bench_ingest")
        common.migrate(common.pg_url("bench_ingest"))
        targets.append(Target("pg", "wsgi:app", common.pg_url("bench_ingest"), "pg"))
        if args.growth:
            from bench.seed import copy_of_template

            copy_of_template("bench_ingest_1m", reseed=args.reseed)
            targets.append(Target("pg_1m", "wsgi:app", common.pg_url("bench_ingest_1m"), "pg"))
        if args.diagnose:
            # Not candidate settings (acknowledging before the WAL is flushed loses callbacks on a
            # crash): measurements of how much of the cost is commit latency and logging.
            common.create_db("bench_ingest_nosync")
            common.migrate(common.pg_url("bench_ingest_nosync"))
            targets.append(Target("pg_nosync", "wsgi:app", common.pg_url("bench_ingest_nosync"), "pg",
                                  env={"PGOPTIONS": "-c synchronous_commit=off"},
                                  diagnostic="DIAGNOSTIC ONLY: synchronous_commit=off (how much is WAL flush latency)"))
            common.create_db("bench_ingest_quiet")
            common.migrate(common.pg_url("bench_ingest_quiet"))
            targets.append(Target("pg_quiet", "wsgi:app", common.pg_url("bench_ingest_quiet"), "pg",
                                  env={"LOG_LEVEL": "WARNING"},
                                  diagnostic="DIAGNOSTIC: LOG_LEVEL=WARNING (cost of the per-callback INFO lines)"))
        # --compare TREE …: the pg target served from other checkouts too, each with its own
        # database migrated by its own CLI, for an A/B of code in one run (same machine, same drift).
        compared = [Path(tree).resolve() for tree in (args.compare or [])]
        compared_dbs = [f"bench_ingest_cmp{n}" for n in range(1, len(compared) + 1)]
        for n, (tree, db) in enumerate(zip(compared, compared_dbs), 1):
            common.create_db(db)
            common.migrate(common.pg_url(db), tree)
            targets.append(Target(f"pg@{n}", "wsgi:app", common.pg_url(db), "pg", tree=tree,
                                  diagnostic=f"A/B: the pg target served from {tree}"))
        if args.sqlite:
            url = f"sqlite:///{wd}/ingest.db"
            common.migrate(url)
            targets.append(Target("sqlite", "wsgi:app", url, "sqlite"))
        for t in targets:
            env = common.service_env(t.database_url or "sqlite:///" + str(wd / "unused.db"),
                                     SPOOL_DIR=str(wd / f"spool-{t.name}"), **t.env)
            t.proc = common.gunicorn(procs, t.name, t.app, t.port, env, tree=t.tree)
        for t in targets:
            common.wait_http(f"http://127.0.0.1:{t.port}/healthz", t.proc)
        log("ingest: warming up every target (3 s each)")
        for t in targets:
            run_wrk(t.port, seconds=3, connections=args.connections, threads=args.wrk_threads, prefix=f"w{t.name}")
        for r in range(args.rounds):
            # With --compare, every other round serves the targets in the opposite order, so that a
            # drift within a round does not favour the tree that comes first.
            order = targets if not compared or r % 2 == 0 else targets[:1] + targets[:0:-1]
            for t in order:
                set_aside = []
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    res = measure(t, args, prefix=f"r{r}{t.name}{attempt}")
                    res["lopsided"] = lopsided(res.get("worker_share"), res.get("workers", 0))
                    if not res["lopsided"] or attempt == MAX_ATTEMPTS:
                        break
                    log(f"ingest round {r + 1}/{args.rounds} {t.name:9s} {res['rps']:8.1f} req/s: lopsided "
                        f"(one worker did {res['worker_share']:.0%} of the workers' CPU); set aside, run again")
                    # its stored check still counts: a lopsided round must not hide a lost callback
                    set_aside.append({"rps": round(res["rps"], 1), "worker_share": res["worker_share"],
                                      **({"stored_check": res["stored_check"]} if "stored_check" in res else {})})
                if set_aside:
                    res["set_aside_lopsided"] = set_aside
                t.rounds.append(res)
                log(f"ingest round {r + 1}/{args.rounds} {t.name:9s} {res['rps']:8.1f} req/s  "
                    f"p50 {res['p50_us'] / 1000:6.1f} ms  p99 {res['p99_us'] / 1000:6.1f} ms  errors {res['errors']}"
                    + (f"  busiest worker {res['worker_share']:.0%}" if res.get("worker_share") is not None else "")
                    + (f" (lopsided, kept: {MAX_ATTEMPTS} attempts were)" if res["lopsided"] else "")
                    + (f"  stored {res['stored']} ({res['stored_check']}"
                       + (f", {res['stored_after_the_run']} of them drained from the spool after the run"
                          if res.get("stored_after_the_run") else "") + ")" if "stored" in res else "")
                    + (f"  new conns/100 req {res['new_connections_per_100_requests']}"
                       if "new_connections_per_100_requests" in res else "")
                    + "  cpu ms/req " + " ".join(f"{k}={v}" for k, v in res["cpu_ms_per_request"].items()))
        bare = targets[0]
        summary = {}
        for t in targets:
            rps = [x["rps"] for x in t.rounds]
            entry = {"rps_per_round": [round(v, 1) for v in rps], "rps_median": round(median(rps), 1),
                     "p50_ms_median": round(median([x["p50_us"] for x in t.rounds]) / 1000, 2),
                     "p99_ms_median": round(median([x["p99_us"] for x in t.rounds]) / 1000, 2),
                     "errors": sum(x["errors"] for x in t.rounds)}
            entry["busiest_worker_share_per_round"] = [x.get("worker_share") for x in t.rounds]
            entry["lopsided_runs_set_aside"] = [a["rps"] for x in t.rounds for a in x.get("set_aside_lopsided", [])]
            if t is not bare:
                ratios = [x["rps"] / b["rps"] for x, b in zip(t.rounds, bare.rounds)]
                entry["ratio_per_round"] = [round(v, 3) for v in ratios]
                entry["ratio_median"] = round(median(ratios), 3)
                entry["stored_checks"] = dict(Counter(
                    [x.get("stored_check") for x in t.rounds]
                    + [a.get("stored_check") for x in t.rounds for a in x.get("set_aside_lopsided", [])]))
                entry["answered_not_in_db"] = sum(x.get("answered_not_in_db", 0) for x in t.rounds)
                entry["stored_from_the_spool_after_the_run"] = sum(x.get("stored_after_the_run", 0) for x in t.rounds)
                if t.kind == "pg":
                    entry["new_connections_per_100_requests_median"] = median(
                        [x.get("new_connections_per_100_requests", 0) for x in t.rounds])
            entry["cpu_ms_per_request_median"] = {
                k: round(median([x["cpu_ms_per_request"][k] for x in t.rounds]), 3) for k in t.rounds[0]["cpu_ms_per_request"]}
            if t.diagnostic:
                entry["diagnostic"] = t.diagnostic
            if t.tree != common.ROOT and "pg" in summary:
                pg_rps = summary["pg"]["rps_per_round"]
                relative = [x["rps"] / p for x, p in zip(t.rounds, pg_rps)]
                entry["tree"] = str(t.tree)
                entry["relative_to_pg_per_round"] = [round(v, 3) for v in relative]
                entry["relative_to_pg_median"] = round(median(relative), 3)
                log(f"ingest: {t.name} ({t.tree}) / pg (this tree): median {entry['relative_to_pg_median']}, "
                    f"per round {' '.join(f'{v:.2f}' for v in relative)}")
            summary[t.name] = entry
        results["targets"] = summary
        if "pg" in summary:
            results["target_ratio_ge_0.5"] = summary["pg"]["ratio_median"] >= 0.5
        if "pg_1m" in summary:
            growth = summary["pg_1m"]["ratio_median"] / summary["pg"]["ratio_median"]
            results["growth"] = {"ratio_1m_over_empty": round(growth, 3), "target_ge_0.9": growth >= 0.9,
                                 "seed": "1,000,000 callbacks + 1,000,000 dismissals + 3,000,000 members"}
        if args.profile:
            pg = next(t for t in targets if t.name == "pg")
            pg.empty()
            log(f"ingest: profiling the pg target with py-spy for {args.seconds} s")
            results["profile_pg"] = profile(pg, procs, wd, seconds=int(args.seconds), connections=args.connections,
                                            threads=args.wrk_threads)
    if not args.keep:
        for db in ("bench_ingest", "bench_ingest_1m", "bench_ingest_nosync", "bench_ingest_quiet", *compared_dbs):
            common.drop_db(db)
    return results
