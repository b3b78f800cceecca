"""gunicorn settings for the receiver (`gunicorn -c gunicorn.conf.py wsgi:app`); env overrides noted."""

import gc
import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Threads suit this service: handlers wait on the database and long-polls wait on events.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# IM keeps callback connections alive; keep them open a little longer than its idle time.
keepalive = 75
timeout = 60
graceful_timeout = 30
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Several workers, each with its own counters: a scrape answered by one, then by another, would
# see counters go backwards (a reset, to Prometheus). Unless the operator shares a directory
# with the worker process (README, Metrics), the workers share one of their own, made here in
# the master before they fork and import prometheus-client, and removed when it exits.
_OWN_METRICS_DIR = None
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="receiver-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR


def on_exit(server):
    if _OWN_METRICS_DIR is not None:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)


def post_worker_init(worker):
    """Leave what start-up built out of the garbage collector's full passes (`gc.freeze`).

    Each worker imports the app itself, a heap of a few hundred thousand long-lived objects
    (SQLAlchemy, marshmallow, Flask): every full collection walked them all, 50 to 70 ms with
    the interpreter lock held, every few seconds under load (bench/README). Frozen, they are
    never collected, as they never would have been.
    """
    gc.freeze()


def child_exit(server, worker):
    """Let prometheus-client drop a dead worker's live gauges (PROMETHEUS_MULTIPROC_DIR mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
