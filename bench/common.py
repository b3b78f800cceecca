"""Shared plumbing for the benchmarks: processes, databases, ports, HTTP polling, percentiles.

Everything here is loopback-only and bounded: every wait has a deadline and every process we
start is stopped (SIGTERM, then SIGKILL) by the `Processes` context manager, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import requests

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN", "postgresql://root@127.0.0.1:5432/test")
PG_URL_TEMPLATE = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/{db}")
SDKAPPID = 1400000000
CALLBACK_TOKEN = "bench-callback-token"
API_TOKEN = "bench-api-token"
SECRET_KEY = "bench-secret-key-0123456789abcdef"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "python_loop_ms": python_loop_ms(), "thread_handoff_us": thread_handoff_us(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def python_loop_ms(repeat: int = 3) -> float:
    """Milliseconds this interpreter takes for a fixed loop (best of `repeat`): the machine's speed today.

    The model name says little on these shared machines (the same "AMD EPYC" has run the bare
    handler at 1,930 and at 3,850 req/s); this figure lets absolute bounds (dispatch, query) be
    read against the run that produced them.
    """
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def thread_handoff_us(rounds: int = 20_000, repeat: int = 3) -> float:
    """Microseconds for two threads to hand control back and forth once through two locks (best of `repeat`).

    What a thread-per-request server pays at every wake-up (system calls and context switches,
    which a virtual machine may make dear), beside `python_loop_ms`'s plain interpreter speed.
    """
    best = float("inf")
    for _ in range(repeat):
        ping, pong = threading.Lock(), threading.Lock()
        ping.acquire()
        pong.acquire()

        def answer() -> None:
            for _ in range(rounds):
                ping.acquire()
                pong.release()

        other = threading.Thread(target=answer, daemon=True)
        other.start()
        started = time.perf_counter()
        for _ in range(rounds):
            ping.release()
            pong.acquire()
        best = min(best, time.perf_counter() - started)
        other.join()
    return round(best / rounds * 1e6, 1)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# -- PostgreSQL -----------------------------------------------------------------------------------

def pg_url(db: str) -> str:
    return PG_URL_TEMPLATE.format(db=db)


def psql(sql: str, db: str = "test", *, timeout: float = 600) -> str:
    """Run SQL through psql (ON_ERROR_STOP); return stdout."""
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    out = subprocess.run(["psql", f"{base}/{db}", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({db}): {out.stderr.strip()[:2000]}")
    return out.stdout


def pg_available() -> bool:
    try:
        psql("select 1")
        return True
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return False


def drop_db(db: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def create_db(db: str, template: str | None = None) -> None:
    drop_db(db)
    psql(f'CREATE DATABASE "{db}"' + (f' TEMPLATE "{template}"' if template else ""))


def db_exists(db: str) -> bool:
    return psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'").strip() == "1"


def migrate(database_url: str, tree: Path = ROOT) -> None:
    """Bring the database to `tree`'s schema, by that tree's own CLI (another checkout may differ)."""
    env = service_env(database_url)
    out = subprocess.run([str(BIN / "flask"), "--app", "app", "db", "upgrade"], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"migration failed: {out.stderr[-2000:]}")


# -- processes ------------------------------------------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK")


def process_stat(pid: int | str) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds used so far: user + system) of a live process, read
    from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return (stat[stat.index("(") + 1:stat.rindex(")")], int(rest[1]),
            (int(rest[11]) + int(rest[12])) / _HZ)


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a receiver process for the benchmarks (no .env file is in ROOT)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IM_", "API_TOKENS", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL"))}
    env.update({
        "DATABASE_URL": database_url,
        "IM_SDKAPPID": str(SDKAPPID),
        "IM_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "API_TOKENS": API_TOKEN,
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class Processes:
    """Start child processes in their own process groups; stop them all on exit."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
        logf = open(self.logdir / f"{name.replace('/', '_')}.log", "ab")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 35) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def close(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            self.stop(proc)

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tail(self, name: str, n: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def gunicorn(procs: Processes, name: str, app: str, port: int, env: dict[str, str],
             tree: Path = ROOT) -> subprocess.Popen:
    """Serve `app` with the tree's gunicorn.conf.py (this project's: the same workers and threads for every app)."""
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1"}
    return procs.start(name, [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", app], env, cwd=tree)


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = requests.get(url, timeout=2)
            if r.status_code in ok:
                return
            last = r.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s (last: {last})")


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


def pid_cpu(pid: int) -> float:
    """CPU seconds used so far by a live process (user + system); 0 if it is gone."""
    stat = process_stat(pid)
    return 0.0 if stat is None else stat[2]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return kids


def tree_cpu(pid: int) -> float:
    """CPU seconds used by a live process and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += pid_cpu(p)
        todo += _children(p)
    return total


def postgres_cpu() -> float:
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                    total += pid_cpu(int(pid))
    return total


def machine_busy_cpu() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _HZ
