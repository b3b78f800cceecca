"""`make bench` / `python -m bench.run [ingest] [dispatch] [query] [options]`.

Runs the chosen benchmarks (all by default), prints each result, writes them all to
bench/results/latest.json (with the date, machine and command) and a one-screen summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import common

BENCHES = ("ingest", "dispatch", "query")
OPTIONAL = ("cost", "pgcost")  # run only when asked for by name


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benches", nargs="*", default=[], metavar="{" + ",".join(BENCHES + OPTIONAL) + "}",
                   help="which benchmarks to run (default: all but cost and pgcost); ingest includes the growth "
                        "comparison")
    p.add_argument("--rounds", type=int, default=5, help="ingest: alternating rounds (>= 3)")
    p.add_argument("--seconds", type=float, default=10, help="ingest: seconds of load per target per round")
    p.add_argument("--connections", type=int, default=32, help="ingest: wrk connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="ingest: wrk threads (2 cores: leave the other to gunicorn)")
    p.add_argument("--no-growth", dest="growth", action="store_false", help="ingest: skip the 1,000,000-callback target")
    p.add_argument("--no-sqlite", dest="sqlite", action="store_false", help="ingest: skip the SQLite target")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="ingest: skip the py-spy round")
    p.add_argument("--no-diagnose", dest="diagnose", action="store_false",
                   help="ingest: skip the diagnostic targets (synchronous_commit=off, LOG_LEVEL=WARNING)")
    p.add_argument("--dismissals", type=int, default=10_000, help="dispatch: dismissals in the batch")
    p.add_argument("--dispatch-concurrency", type=int, default=None,
                   help="dispatch: DISPATCH_CONCURRENCY for the worker (default: the service's, 32)")
    p.add_argument("--requests", type=int, default=300, help="query: sequential requests per endpoint")
    p.add_argument("--compare", nargs="*", metavar="TREE",
                   help="cost, pgcost: other checkouts (e.g. git worktrees) to measure alongside this one; "
                        "ingest: serve the pg target from them too, in the same rounds (an A/B of code)")
    p.add_argument("--cost-requests", type=int, default=100, help="cost: N, for runs of N and 4 × N callbacks")
    p.add_argument("--pg-batch", type=int, nargs="+", default=[6], help="pgcost: batch sizes (default: 6)")
    p.add_argument("--pg-batches", type=int, default=1000, help="pgcost: batches per measured run")
    p.add_argument("--pg-repeat", type=int, default=5, help="pgcost: runs per tree and batch size (alternating)")
    p.add_argument("--reseed", action="store_true", help="rebuild the 1,000,000-row template database")
    p.add_argument("--keep", action="store_true", help="keep the work directory and databases (debugging)")
    p.add_argument("--out", default=str(Path(__file__).with_name("results") / "latest.json"))
    args = p.parse_args(argv)
    for name in args.benches:
        if name not in BENCHES + OPTIONAL:
            p.error(f"unknown benchmark {name!r}: choose from {', '.join(BENCHES + OPTIONAL)}")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    chosen = args.benches or list(BENCHES)
    report = {"machine": common.machine(), "command": "python -m bench.run " + " ".join(argv), "results": {}}
    common.log(f"machine: {report['machine']}")
    failed = False
    for name in chosen:
        started = time.monotonic()
        common.log(f"=== {name} ===")
        try:
            module = __import__(f"bench.{name}", fromlist=["run"])
            result = module.run(args)
        except SystemExit:
            raise
        except Exception as exc:  # report and go on with the next benchmark
            failed = True
            result = {"error": f"{type(exc).__name__}: {exc}"}
            common.log(f"{name} FAILED: {result['error']}")
        result["wall_seconds"] = round(time.monotonic() - started, 1)
        report["results"][name] = result
        print(common.dump({name: result}), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.benches:  # a partial run keeps the other benchmarks' latest figures
        merged = previous.get("results", {})
        merged.update(report["results"])
        report["results"] = merged
    out.write_text(common.dump(report) + "\n")
    common.log(f"results written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
