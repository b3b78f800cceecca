"""A gunicorn worker SIGKILLed mid-request loses no acknowledged callback; re-sends are stored once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from receiver.models import Callback, CallbackState
from tests.conftest import API_TOKEN, TEST_SDKAPPID
from tests.helpers import callback_query, destroyed_body, encode

ROOT = Path(__file__).resolve().parents[2]
CALLBACK_TOKEN = "crash-test-callback-token"
STREAM = 240  # callbacks sent by the steady stream
SLOW = 6  # requests held open mid-body while a worker is killed
SENDERS = 6

pytestmark = pytest.mark.slow


# -- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({"DATABASE_URL": database_url, "IM_SDKAPPID": str(TEST_SDKAPPID), "API_TOKENS": API_TOKEN,
                "IM_CALLBACK_TOKEN": CALLBACK_TOKEN, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Web:
    """`gunicorn -c gunicorn.conf.py wsgi:app` as the Procfile runs it, on a free port."""

    def __init__(self, env: dict[str, str], log: Path, *, workers: int = 2, threads: int = 8,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)}
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                     cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        self.expected_workers = workers

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200 \
                        and len(self.workers()) == self.expected_workers:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"gunicorn never became ready:\n{self.log.read_text()}"
            time.sleep(0.1)

    def workers(self) -> list[int]:
        """The worker processes' pids (children of the master)."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def sigkill_all(self) -> None:
        """Kill master and workers at once, as a power cut would."""
        for pid in [*self.workers(), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # quick shutdown: the test is over
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.sigkill_all()
        self._out.close()


def socket_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server side of the loopback connection from `client_port`."""
    wanted = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted:
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


# -- the client side: IM with "retry on timeout" ----------------------------------------------------

def post_until_acknowledged(url: str, group_id: str, event_time: int, resent: list[str]) -> None:
    """POST one callback; on a connection error or timeout send it again, like IM's retry option."""
    body = encode(destroyed_body(group_id, event_time=event_time))
    session = requests.Session()
    try:
        for attempt in range(20):
            query = callback_query(TEST_SDKAPPID, token=CALLBACK_TOKEN)
            try:
                resp = session.post(f"{url}/im/callback?{query}", data=body,
                                    headers={"Content-Type": "application/json"}, timeout=5)
            except requests.RequestException:
                resent.append(group_id)
                session.close()
                session = requests.Session()
                time.sleep(0.05 * (attempt + 1))
                continue
            assert resp.status_code == 200 and resp.json()["ActionStatus"] == "OK", resp.text
            return
        raise AssertionError(f"{group_id} was never acknowledged")
    finally:
        session.close()


class HalfSent:
    """A callback request whose headers and half of the body are sent; the rest waits."""

    def __init__(self, port: int, group_id: str, event_time: int) -> None:
        self.group_id, self.event_time = group_id, event_time
        self.body = encode(destroyed_body(group_id, event_time=event_time))
        query = callback_query(TEST_SDKAPPID, token=CALLBACK_TOKEN)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        head = (f"POST /im/callback?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n").encode()
        self.sock.sendall(head + self.body[: len(self.body) // 2])
        self.client_port = self.sock.getsockname()[1]

    def finish(self) -> int | None:
        """Send the rest and read the status code; None when the connection died without an answer."""
        try:
            self.sock.sendall(self.body[len(self.body) // 2:])
            answer = self.sock.recv(65536)
        except OSError:
            return None
        finally:
            self.sock.close()
        if not answer:
            return None
        return int(answer.split(b" ", 2)[1])


# -- the test ---------------------------------------------------------------------------------------

def test_sigkill_of_a_gunicorn_worker_mid_request_loses_no_acknowledged_callback(committed_db, tmp_path):
    web = Web(service_env(committed_db.url, SPOOL_DIR=str(tmp_path / "spool")), tmp_path / "web.log")
    try:
        web.wait_ready()
        base_time = int(time.time() * 1000)
        # Requests caught in the middle of their body on both workers: deterministic in-flight work.
        slow = [HalfSent(web.port, f"slow-{i}", base_time + i) for i in range(SLOW)]
        pids = web.workers()
        deadline = time.monotonic() + 10
        owners = {}
        while len(owners) < SLOW:
            owners = {h.group_id: socket_owner(web.port, h.client_port, pids) for h in slow}
            owners = {k: v for k, v in owners.items() if v is not None}
            assert time.monotonic() < deadline, f"half-sent requests not accepted: {owners}"
            time.sleep(0.05)
        victim = max(set(owners.values()), key=lambda pid: list(owners.values()).count(pid))

        # A steady stream of callbacks from several senders, with the kill in the middle of it.
        resent: list[str] = []
        acknowledged: list[str] = []
        lock = threading.Lock()
        queue = [(f"stream-{i}", base_time + 1000 + i) for i in range(STREAM)]

        def sender(items):
            for group_id, event_time in items:
                post_until_acknowledged(web.url, group_id, event_time, resent)
                with lock:
                    acknowledged.append(group_id)

        threads = [threading.Thread(target=sender, args=(queue[i::SENDERS],)) for i in range(SENDERS)]
        for t in threads:
            t.start()
        while len(acknowledged) < STREAM // 3:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        killed_at = len(acknowledged)

        answers = {h.group_id: h.finish() for h in slow}
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert killed_at < STREAM, "the stream finished before the kill; nothing was tested"
        died = [g for g, status in answers.items() if status is None]
        assert sorted(died) == sorted(g for g, pid in owners.items() if pid == victim)
        assert all(answers[g] == 200 for g in answers if g not in died)
        for group_id in died:  # IM's retry of a request that timed out
            post_until_acknowledged(web.url, group_id, base_time + int(group_id.split("-")[1]), resent)

        # The master replaced the dead worker.
        web.wait_ready()
        assert victim not in web.workers()
    finally:
        web.stop()

    expected = {h.group_id for h in slow} | {g for g, _ in queue}
    with committed_db.session_scope() as s:
        rows = s.execute(select(Callback.group_id, func.count(), func.sum(Callback.duplicates))
                         .where(Callback.state == CallbackState.ACCEPTED).group_by(Callback.group_id)).all()
        quarantined = s.scalar(select(func.count()).select_from(Callback)
                               .where(Callback.state == CallbackState.QUARANTINED))
    stored = {group_id: (n, dups) for group_id, n, dups in rows}
    assert set(stored) == expected  # every acknowledged callback is there, and nothing else
    assert all(n == 1 for n, _ in stored.values())  # each stored exactly once
    # A re-send counts as a duplicate only when the first request had committed before the kill.
    assert sum(d for _, d in stored.values()) <= len(resent) + len(died)
    assert all(stored[g][1] == 0 for g in died)  # a request killed mid-body had stored nothing
    assert quarantined == 0
    print(json.dumps({"stream": STREAM, "slow": SLOW, "killed_mid_body": len(died), "resent": len(resent),
                      "acknowledged_before_kill": killed_at}))


def test_counters_never_go_backwards_across_workers_without_a_metrics_directory(tmp_path):
    # Two workers and no PROMETHEUS_MULTIPROC_DIR set by the operator (the Procfile as it is):
    # each scrape, whichever worker answers it, must count every worker's requests.
    web = Web(service_env(f"sqlite:///{tmp_path / 'metrics.db'}", SPOOL_DIR=str(tmp_path / "spool")),
              tmp_path / "web.log", workers=2, threads=4)
    try:
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, check=True,
                       env=service_env(f"sqlite:///{tmp_path / 'metrics.db'}", SPOOL_DIR=str(tmp_path / "spool")),
                       capture_output=True, timeout=120)
        web.wait_ready()
        seen = []
        for _ in range(30):
            with requests.Session() as fresh:  # a new connection each time: either worker may answer
                assert fresh.get(f"{web.url}/healthz", timeout=5).status_code == 200
                text = fresh.get(f"{web.url}/metrics", timeout=5).text
            [line] = [ln for ln in text.splitlines()
                      if ln.startswith('receiver_http_requests_total{endpoint="/healthz",status="200"}')]
            seen.append(float(line.rsplit(" ", 1)[1]))
        assert seen == sorted(seen) and seen[-1] >= 30, seen
    finally:
        web.stop()
