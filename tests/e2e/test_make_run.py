"""`make run` (receiver.devrun): the whole loop on the embedded defaults with the simulator, and Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose working directory is `directory` (what `make run` started there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == directory:
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_make_run_serves_the_whole_loop_and_ctrl_c_stops_everything(tmp_path):
    # A directory of its own (instance/ is made there), with the entry points `make run` uses.
    for name in ("app.py", "wsgi.py", "gunicorn.conf.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    port, sim_port = free_port(), free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port), "IMSIM_PORT": str(sim_port),
           "HOME": str(tmp_path)}
    log = open(tmp_path / "run.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "receiver.devrun"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while b"Ctrl-C stops everything" not in (tmp_path / "run.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        output = (tmp_path / "run.log").read_text()
        token = re.search(r"API token\s+(\S+)", output).group(1)
        auth = {"Authorization": f"Bearer {token}"}
        web = f"http://127.0.0.1:{port}"
        resp = requests.post(f"{web}/v1/dismissals", json={"group_id": "demo-group-1"}, headers=auth, timeout=10)
        assert resp.status_code == 202, resp.text
        dismissal = requests.get(f"{web}/v1/dismissals/{resp.json()['id']}?wait=30", headers=auth, timeout=40).json()
        assert (dismissal["status"], dismissal["confirmation"]) == ("confirmed", "callback"), dismissal
        assert processes_in(tmp_path)  # web, its workers, the worker, the simulator
    finally:
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C, to the command only (its children lead their own groups)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()
    assert processes_in(tmp_path) == [], (tmp_path / "run.log").read_text()[-3000:]
    for p in (port, sim_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0  # nothing listens any more
