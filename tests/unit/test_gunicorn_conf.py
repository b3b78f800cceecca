"""gunicorn.conf.py's hooks, run as gunicorn runs them (the file as a module, the hook called)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_freezes_what_start_up_built_after_loading_the_app(tmp_path):
    # In a process of its own: a freeze lasts for the process, and pytest's must not change.
    code = ("import gc, runpy\n"
            "conf = runpy.run_path('gunicorn.conf.py')\n"
            "import wsgi\n"  # the app, as a worker loads it before post_worker_init
            "before = gc.get_freeze_count()\n"
            "conf['post_worker_init'](None)\n"
            "print(before, gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "sqlite:///:memory:", "SPOOL_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 50_000  # the app's objects, not a handful
