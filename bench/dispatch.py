"""Dispatch benchmark (issue 7, part 3): N dismissals through the IM simulator, end to end.

Processes, all on loopback, all started and stopped here:
  web       gunicorn -c gunicorn.conf.py wsgi:app on PostgreSQL (database bench_dispatch)
  imsim     flask --app app imsim --port P --callback-url http://127.0.0.1:WEB/im/callback
  worker    flask --app app worker (IM_API_BASE = the simulator)

The groups are created in the simulator first through its real create_group API, paced at
190 calls/s under its 200/s limit (the simulator has no bulk seed; 10,000 groups take ~53 s).
Then the clock starts: POST /v1/dismissals/batch (chunks of ≤ 10,000), and it stops when every
dismissal is confirmed (the last confirmed_at in the database). The physical minimum is
N / 200 per second (50 s for 10,000); the target is ≤ 1.04 × that.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench import common
from bench.common import log

CREATE_RATE = 190  # per second, under the simulator's 200 per calendar second
LIMIT = 200


def _create_groups(sim_url: str, group_ids: list[str]) -> dict:
    from receiver.im.usersig import generate

    sig = generate(common.SDKAPPID, common.SECRET_KEY, "administrator", expire=86400)
    params = {"sdkappid": str(common.SDKAPPID), "identifier": "administrator", "usersig": sig,
              "contenttype": "json"}
    url = f"{sim_url}/v4/group_open_http_svc/create_group"
    local = threading.local()
    retried = {"n": 0}
    start = time.monotonic() + 0.2

    def create(i_gid):
        i, gid = i_gid
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        for attempt in range(20):
            delay = start + i / CREATE_RATE - time.monotonic() if attempt == 0 else 1.0
            if delay > 0:
                time.sleep(delay)
            body = {"Type": "Public", "Name": f"bench {i}", "Owner_Account": f"owner{i % 97}", "GroupId": gid,
                    "MemberList": [{"Member_Account": f"user{(i * 3 + k) % 5000}"} for k in range(3)]}
            r = s.post(url, params={**params, "random": str(i)}, json=body, timeout=10).json()
            if r["ErrorCode"] == 0:
                return
            if r["ErrorCode"] in (60007, 10002):
                retried["n"] += 1
                continue
            raise RuntimeError(f"create_group {gid}: {r}")
        raise RuntimeError(f"create_group {gid}: still refused after retries")

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, enumerate(group_ids)))
    return {"groups": len(group_ids), "seconds": round(time.monotonic() - t0, 1), "retried": retried["n"]}


def run(args) -> dict:
    if not common.pg_available():
        raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432")
    n = args.dismissals
    db = "bench_dispatch"
    common.create_db(db)
    url = common.pg_url(db)
    common.migrate(url)
    web_port, sim_port = common.free_port(), common.free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    web_url = f"http://127.0.0.1:{web_port}"
    result: dict = {"dismissals": n, "physical_minimum_s": n / LIMIT, "target_s": round(1.04 * n / LIMIT, 1)}
    with common.workdir(keep=args.keep) as wd, common.Processes(wd) as procs:
        env = common.service_env(url, IM_SECRET_KEY=common.SECRET_KEY, IM_API_BASE=sim_url,
                                 SPOOL_DIR=str(wd / "spool"),
                                 **({"DISPATCH_CONCURRENCY": str(args.dispatch_concurrency)}
                                    if getattr(args, "dispatch_concurrency", None) else {}))
        result["dispatch_concurrency"] = env.get("DISPATCH_CONCURRENCY", "32 (default)")
        web = common.gunicorn(procs, "web", "wsgi:app", web_port, env)
        sim = procs.start("imsim", [str(common.BIN / "flask"), "--app", "app", "imsim", "--port", str(sim_port),
                                    "--callback-url", f"{web_url}/im/callback"], env)
        common.wait_http(f"{web_url}/healthz", web)
        common.wait_http(f"{sim_url}/_sim/stats", sim)
        group_ids = [f"bench-{int(time.time())}-{i:06d}" for i in range(n)]
        log(f"dispatch: creating {n:,} groups in the simulator at {CREATE_RATE}/s")
        result["seeding"] = _create_groups(sim_url, group_ids)
        worker = procs.start("worker", [str(common.BIN / "flask"), "--app", "app", "worker"], env)
        # the worker is ready once it holds the sender lease (one row in `leases`)
        deadline = time.monotonic() + 60
        while common.psql("SELECT count(*) FROM leases WHERE name = 'im-sender'", db=db).strip() != "1":
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start: " + procs.tail("worker"))
            time.sleep(0.2)
        # Start from a quiet database: finish any checkpoint left by what ran before (the ingest
        # bench writes gigabytes), so its writes do not land in the middle of the timed run.
        common.psql("CHECKPOINT")
        time.sleep(1)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {common.API_TOKEN}"
        log(f"dispatch: POST /v1/dismissals/batch × {n:,}; timing until all are confirmed")
        cpu0 = {"web": common.tree_cpu(web.pid), "worker": common.tree_cpu(worker.pid),
                "imsim": common.tree_cpu(sim.pid), "postgres": common.postgres_cpu(),
                "machine_busy": common.machine_busy_cpu()}
        t0 = time.time()
        for i in range(0, n, 10_000):
            r = api.post(f"{web_url}/v1/dismissals/batch", json={"group_ids": group_ids[i:i + 10_000],
                                                                   "reason": "bench", "requested_by": "bench"},
                         timeout=300)
            r.raise_for_status()
        result["batch_request_s"] = round(time.time() - t0, 2)
        deadline = time.monotonic() + max(600, 4 * n / LIMIT)
        final = 0
        while time.monotonic() < deadline:
            final = int(common.psql("SELECT count(*) FILTER (WHERE status IN ('confirmed', 'failed', 'unconfirmed')) "
                                    "FROM dismissals WHERE source = 'api'", db=db).strip())
            if final >= n:
                break
            time.sleep(0.5)
        elapsed = time.time() - t0
        cpu1 = {"web": common.tree_cpu(web.pid), "worker": common.tree_cpu(worker.pid),
                "imsim": common.tree_cpu(sim.pid), "postgres": common.postgres_cpu(),
                "machine_busy": common.machine_busy_cpu()}
        result["cpu_cores_used"] = {k: round((cpu1[k] - cpu0[k]) / elapsed, 2) for k in cpu0}
        stats = api.get(f"{sim_url}/_sim/stats", timeout=10).json()
        row = common.psql(
            "SELECT extract(epoch FROM max(confirmed_at)), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM confirmed_at - requested_at)), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM confirmed_at - requested_at)), "
            "max(extract(epoch FROM confirmed_at - requested_at)), "
            "count(*) FILTER (WHERE confirmation = 'callback'), count(*) FILTER (WHERE attempts > 1), "
            "count(*) FILTER (WHERE status <> 'confirmed') "
            "FROM dismissals WHERE source = 'api'", db=db).strip().split("|")
        last_confirmed = float(row[0]) if row[0] else None
        destroy = stats["apis"].get("destroy_group", {})
        result.update({
            "all_final": final >= n,
            "wall_s": round(last_confirmed - t0, 2) if last_confirmed and final >= n else None,
            "request_to_confirmed_p50_s": round(float(row[1]), 3) if row[1] else None,
            "request_to_confirmed_p99_s": round(float(row[2]), 3) if row[2] else None,
            "request_to_confirmed_max_s": round(float(row[3]), 3) if row[3] else None,
            "confirmed_by_callback": int(row[4]), "with_retries": int(row[5]), "not_confirmed": int(row[6]),
            "destroy_group_calls": destroy.get("calls"),
            "destroy_group_errors": destroy.get("errors"),
            "errors_60007": destroy.get("errors", {}).get("60007", 0),
            "sim_max_per_second": destroy.get("max_per_second"),
            "sim_destroy_per_second": list(destroy.get("per_second", {}).values()),
            "sim_callbacks": stats.get("callbacks"),
        })
        if result["wall_s"]:
            result["wall_over_minimum"] = round(result["wall_s"] / result["physical_minimum_s"], 4)
            result["target_met"] = (result["wall_s"] <= result["target_s"] and result["errors_60007"] == 0
                                    and (result["sim_max_per_second"] or 0) <= LIMIT)
        log(f"dispatch: wall {result['wall_s']} s (minimum {n / LIMIT:.0f} s, target ≤ {result['target_s']} s), "
            f"60007: {result['errors_60007']}, busiest second {result['sim_max_per_second']}, "
            f"p99 request→confirmed {result['request_to_confirmed_p99_s']} s")
    if not args.keep:
        common.drop_db(db)
    return result
