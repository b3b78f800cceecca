"""Soak test: hours-shaped mixed load on real gunicorn + worker + simulator, watching memory, connections, fds.

`make soak` (10 minutes) or `python -m bench.soak --minutes 3 [--database-url postgresql+psycopg://…]`.
Load, all on loopback: signed callbacks for groups nobody asked us to dismiss (external dismissals,
unique groups) at a steady rate; a batch dismissal of fresh simulator groups every few seconds; /v1
queries; long-polls on the latest dismissals. Every `--sample-seconds` it records the RSS and open
file descriptors of each process and the open database connections (pg_stat_activity on
PostgreSQL, open handles on the database file for SQLite). At the end it waits for every dismissal
to become final and checks: every api dismissal confirmed, every callback stored exactly once, no
non-2xx answer. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

from urllib.parse import quote

import requests
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
SDKAPPID = 1400000000
API_TOKEN = "soak-api-token"
CALLBACK_TOKEN = "soak-callback-token"
SECRET_KEY = "soak-secret-key-0123456789abcdef"
GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- processes ------------------------------------------------------------------------------------

class Procs:
    """The processes the soak starts; all stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.named: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.named[name] = proc
        return proc

    def pids(self) -> dict[str, int]:
        """Every process to watch: each one started, and gunicorn's workers by their own name."""
        found = {}
        for name, proc in self.named.items():
            if proc.poll() is not None:
                continue
            found[name] = proc.pid
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                for i, child in enumerate(sorted(int(c) for c in children)):
                    found[f"{name}.w{i}"] = child
        return found

    def stop(self) -> None:
        for proc in self.named.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.named.values():
            try:
                proc.wait(35)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def open_fds(pid: int) -> list[str]:
    targets = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered")


# -- database -------------------------------------------------------------------------------------

class SoakDatabase:
    """A fresh database for the run: a SQLite file, or a schema of its own on PostgreSQL."""

    def __init__(self, base_url: str | None, tmp: Path) -> None:
        self.schema = None
        if not base_url:
            self.path = tmp / "soak.db"
            self.url = f"sqlite:///{self.path}"
            self.kind = "sqlite"
        else:
            base = base_url.replace("postgresql://", "postgresql+psycopg://", 1)
            self.kind = "postgresql"
            self.schema = f"soak_{uuid.uuid4().hex[:10]}"
            self.app_name = self.schema  # tags our connections in pg_stat_activity
            self._admin = create_engine(base)
            with self._admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            sep = "&" if "?" in base else "?"
            self.url = f"{base}{sep}options=-csearch_path%3D{self.schema}&application_name={self.app_name}"
        from receiver import migrate

        migrate.upgrade(self.url)
        self.engine = create_engine(self.url)

    def connections(self, pids: dict[str, int]) -> int:
        if self.kind == "postgresql":
            with self._admin.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                                    {"a": self.app_name}).scalar_one()
        # SQLite has no server: count open handles on the database file across our processes.
        return sum(1 for pid in pids.values() for t in open_fds(pid) if t == str(self.path))

    def drop(self) -> None:
        self.engine.dispose()
        if self.schema:
            with self._admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            self._admin.dispose()


# -- load -----------------------------------------------------------------------------------------

class Load:
    """The traffic generators and what they saw."""

    def __init__(self, web: str, sim: str, stop: threading.Event) -> None:
        self.web, self.sim, self.stop = web, sim, stop
        self.status: Counter = Counter()  # (kind, status) -> count
        self.errors: list[str] = []
        self.callback_groups: list[str] = []
        self.batch_ids: list[str] = []
        self.batch_groups: list[str] = []
        self.lock = threading.Lock()
        self.auth = {"Authorization": f"Bearer {API_TOKEN}"}

    def record(self, kind: str, resp: requests.Response | None, error: str | None = None) -> None:
        with self.lock:
            if resp is None:
                self.status[(kind, "error")] += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{kind}: {error}")
            else:
                self.status[(kind, resp.status_code)] += 1
                if resp.status_code >= 300 and len(self.errors) < 20:
                    self.errors.append(f"{kind}: {resp.status_code} {resp.text[:200]}")

    def paced(self, rate: float, action: Callable[[requests.Session, int], None]) -> None:
        """Call `action` `rate` times per second, on schedule, until stopped."""
        session = requests.Session()
        interval, n, start = 1.0 / rate, 0, time.monotonic()
        while not self.stop.is_set():
            action(session, n)
            n += 1
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
        session.close()

    def callback(self, session: requests.Session, n: int) -> None:
        group_id = f"ext-{uuid.uuid4().hex[:12]}"
        now = str(int(time.time()))
        params = {"SdkAppid": SDKAPPID, "CallbackCommand": GROUP_DESTROYED, "contenttype": "json",
                  "ClientIP": "127.0.0.1", "OptPlatform": "Web", "RequestTime": now,
                  "Sign": hashlib.sha256((CALLBACK_TOKEN + now).encode()).hexdigest()}
        body = {"CallbackCommand": GROUP_DESTROYED, "GroupId": group_id, "Type": "Public", "Owner_Account": "o",
                "Name": "soak", "EventTime": int(time.time() * 1000),
                "MemberList": [{"Member_Account": f"m{i}"} for i in range(5)]}
        try:
            resp = session.post(f"{self.web}/im/callback", params=params, json=body, timeout=10)
            self.record("callback", resp)
            if resp.status_code == 200:
                with self.lock:
                    self.callback_groups.append(group_id)
        except requests.RequestException as exc:
            self.record("callback", None, repr(exc))

    def batch(self, session: requests.Session, n: int, *, size: int, creator) -> None:
        groups = []
        for i in range(size):
            try:
                groups.append(creator.create_group("Public", f"soak {n}-{i}", owner="o", members=("a", "b")))
            except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                self.record("create_group", None, repr(exc))
        if not groups:
            return
        try:
            resp = session.post(f"{self.web}/v1/dismissals/batch", json={"group_ids": groups, "reason": "soak"},
                                headers=self.auth, timeout=30)
            self.record("batch", resp)
            if resp.status_code == 202:
                with self.lock:
                    self.batch_ids.extend(item["id"] for item in resp.json()["items"])
                    self.batch_groups.extend(groups)
        except requests.RequestException as exc:
            self.record("batch", None, repr(exc))

    def query(self, session: requests.Session, n: int) -> None:
        with self.lock:
            group = random.choice(self.batch_groups) if self.batch_groups else None
        urls = [f"{self.web}/v1/dismissals?limit=20", f"{self.web}/v1/stats", f"{self.web}/v1/callbacks?limit=20",
                f"{self.web}/v1/dismissals?status=confirmed&limit=50"]
        if group is not None:  # before the first batch there is no group of ours to ask for (a 404)
            urls.append(f"{self.web}/v1/groups/{quote(group, safe='')}")
        url = random.choice(urls)
        try:
            self.record("query", session.get(url, headers=self.auth, timeout=10))
        except requests.RequestException as exc:
            self.record("query", None, repr(exc))

    def longpoll(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            with self.lock:
                recent = self.batch_ids[-50:]
            if not recent:
                self.stop.wait(0.5)
                continue
            try:
                resp = session.get(f"{self.web}/v1/dismissals/{random.choice(recent)}", params={"wait": 10},
                                   headers=self.auth, timeout=20)
                self.record("longpoll", resp)
                if resp.ok and resp.json()["status"] in ("confirmed", "failed", "unconfirmed"):
                    self.stop.wait(0.5)  # already final: answered at once; do not spin
            except requests.RequestException as exc:
                self.record("longpoll", None, repr(exc))
        session.close()


# -- the run --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to load (default 10)")
    parser.add_argument("--database-url", default=os.environ.get("SOAK_DATABASE_URL"),
                        help="PostgreSQL base URL (a schema of its own is made and dropped); default: SQLite")
    parser.add_argument("--callbacks-per-second", type=float, default=20.0)
    parser.add_argument("--queries-per-second", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batch-every", type=float, default=5.0, help="seconds between batch dismissals")
    parser.add_argument("--longpolls", type=int, default=4, help="concurrent long-poll clients")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the samples and summary here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    db = SoakDatabase(args.database_url, tmp)
    web_port, sim_port = free_port(), free_port()
    web, sim = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sim_port}"
    env = dict(os.environ)
    for name in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update({"DATABASE_URL": db.url, "IM_SDKAPPID": str(SDKAPPID), "IM_SECRET_KEY": SECRET_KEY,
                "IM_API_BASE": sim, "IM_CALLBACK_TOKEN": CALLBACK_TOKEN, "API_TOKENS": API_TOKEN,
                "PORT": str(web_port), "SPOOL_DIR": str(tmp / "spool"), "LOG_LEVEL": "WARNING",
                "CONFIRM_TIMEOUT_SECONDS": "30", "PYTHONUNBUFFERED": "1"})
    procs = Procs(tmp)
    log(f"{db.kind} database, logs in {tmp}")
    samples: list[dict] = []
    stop = threading.Event()
    load = Load(web, sim, stop)
    try:
        procs.start("sim", [sys.executable, "-m", "flask", "--app", "app", "imsim", "--port", str(sim_port),
                            "--callback-url", f"{web}/im/callback"], env)
        procs.start("web", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], env)
        procs.start("worker", [sys.executable, "-m", "flask", "--app", "app", "worker"], env)
        wait_http(f"{sim}/_sim/stats")
        wait_http(f"{web}/readyz")
        time.sleep(2)  # let gunicorn's workers and the dispatcher settle before the first sample

        from receiver.config import load_config
        from receiver.im.client import IMRestClient
        from receiver.im.ratelimit import UnlimitedLimiter

        creator = IMRestClient(load_config(env, dotenv_path=None), limiter=UnlimitedLimiter())

        def sample() -> None:
            pids = procs.pids()
            row = {"t": round(time.monotonic() - started, 1),
                   "rss_kib": {n: rss_kib(p) for n, p in pids.items()},
                   "fds": {n: len(open_fds(p)) for n, p in pids.items()},
                   "db_connections": db.connections(pids)}
            samples.append(row)
            rss_mib = sum(v or 0 for v in row["rss_kib"].values()) / 1024
            log(f"t={row['t']:>6}s rss={rss_mib:.0f} MiB fds={sum(row['fds'].values())} "
                f"db_conns={row['db_connections']} requests={sum(load.status.values())}")

        started = time.monotonic()
        sample()
        threads = [threading.Thread(target=load.paced, args=(args.callbacks_per_second, load.callback), daemon=True),
                   threading.Thread(target=load.paced, args=(args.queries_per_second, load.query), daemon=True),
                   threading.Thread(target=load.paced, args=(1 / args.batch_every, lambda s, n: load.batch(
                       s, n, size=args.batch_size, creator=creator)), daemon=True)]
        threads += [threading.Thread(target=load.longpoll, daemon=True) for _ in range(args.longpolls)]
        for t in threads:
            t.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.sample_seconds, max(end - time.monotonic(), 0)))
            sample()
            for name in ("sim", "web", "worker"):
                if procs.named[name].poll() is not None:
                    raise SystemExit(f"{name} died: see {tmp / (name + '.log')}")
        stop.set()
        for t in threads:
            t.join(30)
        creator.close()
        log("load stopped; waiting for every dismissal to become final")
        checks = verify(db, load)
        sample()
    finally:
        stop.set()
        procs.stop()
        try:
            final = summarize(samples, load, locals().get("checks"), args, db.kind)
        finally:
            db.drop()
    if args.json:
        args.json.write_text(json.dumps({"summary": final, "samples": samples}, indent=2))
    return 0 if final["ok"] else 1


def verify(db: SoakDatabase, load: Load, timeout: float = 120) -> dict:
    from receiver.models import FINAL_STATUSES, Callback, CallbackState, Dismissal, Source, Status

    ids = list(load.batch_ids)
    deadline = time.monotonic() + timeout
    with db.engine.connect() as conn:
        while True:
            open_left = conn.execute(select(func.count()).select_from(Dismissal).where(
                Dismissal.source == Source.API, Dismissal.status.not_in(FINAL_STATUSES))).scalar_one()
            if open_left == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
            conn.rollback()
        statuses = Counter(dict(conn.execute(select(Dismissal.status, func.count()).where(Dismissal.source == Source.API)
                                             .group_by(Dismissal.status)).all()))
        per_group = dict(conn.execute(select(Callback.group_id, func.count()).where(
            Callback.state == CallbackState.ACCEPTED).group_by(Callback.group_id)).all())
        external = conn.execute(select(func.count()).select_from(Dismissal)
                                 .where(Dismissal.source == Source.EXTERNAL)).scalar_one()
        quarantined = conn.execute(select(func.count()).select_from(Callback)
                                   .where(Callback.state == CallbackState.QUARANTINED)).scalar_one()
    sent_callbacks = list(load.callback_groups)
    return {
        "api_dismissals": len(ids),
        "api_confirmed": statuses.get(Status.CONFIRMED, 0),
        "api_not_confirmed": {s.value: n for s, n in statuses.items() if s != Status.CONFIRMED},
        "callbacks_sent": len(sent_callbacks),
        "callbacks_missing": sum(1 for g in sent_callbacks if per_group.get(g, 0) == 0),
        "callbacks_stored_more_than_once": sum(1 for n in per_group.values() if n > 1),
        "batch_groups_without_callback": sum(1 for g in load.batch_groups if per_group.get(g, 0) == 0),
        "external_dismissals": external,
        "quarantined": quarantined,
    }


def summarize(samples: list[dict], load: Load, checks: dict | None, args, kind: str) -> dict:
    def series(key: str, fold=sum):
        return [fold(v for v in s[key].values() if v is not None) if isinstance(s[key], dict) else s[key]
                for s in samples]

    rss = [v / 1024 for v in series("rss_kib")]
    fds = series("fds")
    conns = [s["db_connections"] for s in samples]
    per_process = {}
    for name in samples[-1]["rss_kib"] if samples else ():
        values = [s["rss_kib"].get(name) for s in samples if s["rss_kib"].get(name)]
        if values:
            per_process[name] = {"start_mib": round(values[0] / 1024, 1), "end_mib": round(values[-1] / 1024, 1),
                                 "max_mib": round(max(values) / 1024, 1)}
    non_2xx = {f"{k} {s}": n for (k, s), n in sorted(load.status.items(), key=str) if s == "error" or s >= 300}
    totals = Counter()
    for (k, _), n in load.status.items():
        totals[k] += n
    ok = bool(checks) and not non_2xx and checks["api_confirmed"] == checks["api_dismissals"] \
        and checks["callbacks_missing"] == 0 and checks["callbacks_stored_more_than_once"] == 0 \
        and checks["batch_groups_without_callback"] == 0 and checks["quarantined"] == 0
    summary = {
        "database": kind, "minutes": args.minutes, "requests": dict(totals), "non_2xx": non_2xx,
        "errors_sample": load.errors[:5], "checks": checks,
        "memory_total_mib": {"start": round(rss[0], 1), "end": round(rss[-1], 1), "max": round(max(rss), 1)}
        if rss else None,
        "memory_by_process": per_process,
        "open_fds_total": {"start": fds[0], "end": fds[-1], "max": max(fds)} if fds else None,
        "db_connections": {"start": conns[0], "end": conns[-1], "max": max(conns)} if conns else None,
        "ok": ok,
    }
    print(json.dumps(summary, indent=2), flush=True)
    log("PASS" if ok else "FAIL")
    return summary


if __name__ == "__main__":
    sys.exit(main())
