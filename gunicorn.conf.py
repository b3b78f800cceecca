"""gunicorn settings for the receiver (`gunicorn -c gunicorn.conf.py wsgi:app`); env overrides noted."""

import gc
import os

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
