"""Instructions per callback: a noise-free A/B of code changes on the callback path.

Wall-clock figures on these shared machines drift by a third within an hour; instruction counts
do not. `valgrind --tool=callgrind` runs the receiver's WSGI application in-process, one thread,
on PostgreSQL, each request a unique valid signed callback stored through the group commit (so
each is a batch of one: the per-batch cost is counted whole). Two runs, N and 4 × N requests
after the same warm-up; the difference over 3 × N is the cost of one callback, start-up and
imports cancelled out. Two runs of the same tree agree within about 2 % (ids, timestamps and
hash seeds differ). What it does not see: the kernel's side of system calls, waiting, and the
interpreter lock's contention under load; the ingest bench measures those.

  python -m bench.cost                       # this tree
  python -m bench.cost --compare /path/tree  # and another checkout (e.g. a git worktree), side by side

Both trees run in parallel (instructions do not depend on the other core being busy).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve()
VALGRIND_HINT = "valgrind is not installed: `apt-get install -y valgrind` (Debian's package)."


def run(args) -> dict:
    from bench import common

    if shutil.which("valgrind") is None:
        raise SystemExit(VALGRIND_HINT)
    if not common.pg_available():
        raise SystemExit("PostgreSQL is not reachable at 127.0.0.1:5432 (see README: trust auth as root)")
    trees = [common.ROOT] + [Path(t).resolve() for t in (args.compare or [])]
    common.log(f"cost: {args.cost_requests} and {4 * args.cost_requests} callbacks under callgrind, per tree "
               f"(≈ {args.cost_requests // 50} min each)")
    with ThreadPoolExecutor(len(trees)) as pool:
        counts = list(pool.map(lambda pair: _measure(pair[1], f"bench_cost_{pair[0]}", args.cost_requests),
                               enumerate(trees)))
    out: dict = {"requests": [args.cost_requests, 4 * args.cost_requests], "trees": {}}
    for tree, per_callback in zip(trees, counts):
        out["trees"][str(tree)] = {"instructions_per_callback": per_callback, "commit": commit_of(tree)}
        common.log(f"cost: {tree}: {per_callback / 1000:,.1f} k instructions per callback")
    if len(trees) > 1:
        base = counts[0]
        out["relative_to_this_tree"] = {str(t): round(c / base, 3) for t, c in zip(trees[1:], counts[1:])}
    return out


def _measure(tree: Path, db: str, n: int) -> int:
    from bench import common

    common.create_db(db)
    try:
        # The tree's own migrations, by its own CLI (it may be older or newer than this one).
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=tree, check=True,
                       capture_output=True, env={**os.environ, "DATABASE_URL": common.pg_url(db)})
        totals = [_callgrind(tree, common.pg_url(db), count) for count in (n, 4 * n)]
    finally:
        common.drop_db(db)
    return round((totals[1] - totals[0]) / (3 * n))


def _callgrind(tree: Path, database_url: str, count: int) -> int:
    from bench import common

    with common.workdir() as wd:
        env = common.service_env(database_url, SPOOL_DIR=str(wd / "spool"))
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={wd}/callgrind.out",
                sys.executable, str(HERE), "--child", str(tree), str(count)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
        match = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-1500:]}")
        return int(match.group(1))


def commit_of(tree: Path) -> str | None:
    """The checkout's commit (`git describe --always --dirty`), for the results."""
    done = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or None


def _child(tree: str, count: int) -> None:
    """Under callgrind: the tree's app, 50 warm-up callbacks, then `count` more."""
    sys.path.insert(0, tree)
    os.chdir(tree)
    sys.stderr = open(os.devnull, "w")  # the access lines: written, not kept
    from receiver import create_app

    app = create_app()
    # Signed here, not by the parent (as `bench.ingest.signed_query` does): under callgrind the
    # start-up alone can take a good part of the 60 s the Sign's RequestTime is good for.
    token, sdkappid = os.environ["IM_CALLBACK_TOKEN"], os.environ["IM_SDKAPPID"]
    request_time = str(int(time.time()))
    sign = hashlib.sha256((token + request_time).encode()).hexdigest()
    query = (f"SdkAppid={sdkappid}&CallbackCommand=Group.CallbackAfterGroupDestroyed&contenttype=json"
             f"&ClientIP=10.0.0.1&OptPlatform=RESTAPI&Sign={sign}&RequestTime={request_time}")
    event_ms = int(time.time() * 1000)
    for i in range(50 + count):
        body = ('{"CallbackCommand":"Group.CallbackAfterGroupDestroyed","GroupId":"@TGS#2cost-%d-%d","Type":"Public",'
                '"Owner_Account":"owner%d","Name":"bench group %d","EventTime":%d,"MemberList":[{"Member_Account":'
                '"owner%d"},{"Member_Account":"user%d"},{"Member_Account":"user%d"}]}'
                % (count, i, i % 997, i, event_ms + i, i % 997, (i * 7) % 100003, (i * 13) % 100003)).encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/im/callback", "QUERY_STRING": query,
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/json", "REMOTE_ADDR": "127.0.0.1"}
        status: list[str] = []
        answer = app(environ, lambda s, _headers: status.append(s))
        b"".join(answer)
        getattr(answer, "close", lambda: None)()
        if not status[0].startswith("200"):
            raise SystemExit(f"callback {i} answered {status[0]}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:  # `python -m bench.cost [--compare TREE …]` is `python -m bench.run cost …`
        sys.path.insert(0, str(HERE.parent.parent))
        from bench.run import main

        raise SystemExit(main(["cost", *sys.argv[1:]]))
