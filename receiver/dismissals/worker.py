"""The worker process: dispatch queued dismissals and reconcile unconfirmed ones until told to stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

from receiver.callbacks.outage import SpoolDrainer
from receiver.callbacks.spool import Spool
from receiver.config import Config
from receiver.db import Database
from receiver.dismissals.dispatcher import Dispatcher
from receiver.dismissals.reconciler import Reconciler
from receiver.im.client import IMCall, IMRestClient
from receiver.im.ratelimit import build_limiter
from receiver.leases import AlwaysHeld, DatabaseLease
from receiver.metrics import Metrics
from receiver.randomness import random_bytes

log = logging.getLogger(__name__)

SENDER_LEASE = "im-sender"
RECONCILER_LEASE = "reconciler"


class MissingSecretKey(RuntimeError):
    """The dispatcher refuses to send to IM without IM_SECRET_KEY."""


def worker_id() -> str:
    """`host:pid:random`, cut to fit the 64-character lease columns.

    The random part keeps two workers apart that share a host name and a process id (containers
    on the host's network, each running its worker as PID 1): the same id, they would both hold
    the sender lease and each other's row leases.
    """
    tail = f":{os.getpid()}:{random_bytes(3).hex()}"
    return socket.gethostname()[: 64 - len(tail)] + tail


def build_client(config: Config, metrics: Metrics | None = None) -> IMRestClient:
    """The IM REST client for this config, rate-limited and counted in metrics."""
    if not config.im_secret_key:
        raise MissingSecretKey("IM_SECRET_KEY is not set: refusing to send dismissals to IM "
                               "(`make run` starts the simulator and sets one for you)")

    def on_call(call: IMCall) -> None:
        if metrics is not None:
            metrics.im_calls.labels(api=call.api, error_code=str(call.error_code)).inc()
            metrics.im_latency.labels(api=call.api).observe(call.duration)

    limiter = build_limiter(config)
    if metrics is not None:
        limiter = TimedLimiter(limiter, metrics)
    # A connection for each dispatch thread, plus the reconciler's probes.
    return IMRestClient(config, limiter=limiter, on_call=on_call, pool_size=config.dispatch_concurrency + 4)


class TimedLimiter:
    """A rate limiter whose waits are observed in `receiver_ratelimit_wait_seconds`."""

    def __init__(self, inner, metrics: Metrics) -> None:  # noqa: ANN001
        self.inner = inner
        self._wait = metrics.ratelimit_wait

    def acquire(self, api: str) -> float:
        waited = self.inner.acquire(api)
        self._wait.labels(api=api).observe(waited)
        return waited


def sender_lease(config: Config, database: Database, holder: str):
    """Without a shared Redis limit, exactly one worker at a time may call IM (elected in the DB)."""
    if config.redis_url:
        return AlwaysHeld()
    ttl = min(15.0, max(3.0, config.dispatch_lease_seconds / 4))
    return DatabaseLease(database, SENDER_LEASE, holder, ttl)


@dataclass
class WorkerSettings:
    poll_interval: float = 0.05
    reconcile_interval: float = 2.0
    standby_interval: float = 1.0
    drain_interval: float = 2.0


class Worker:
    """Ties the dispatcher, the reconciler and the sender lease into one loop."""

    def __init__(self, config: Config, database: Database, client, *, metrics: Metrics | None = None,
                 settings: WorkerSettings = WorkerSettings(), holder: str | None = None) -> None:
        self.config = config
        self.database = database
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.holder = holder or worker_id()
        self.stop_event = threading.Event()
        on_transition = lambda event: self.metrics.transitions.labels(event=event).inc()  # noqa: E731
        self.dispatcher = Dispatcher(
            database, client, worker_id=self.holder, concurrency=config.dispatch_concurrency,
            lease_seconds=config.dispatch_lease_seconds, max_attempts=config.dispatch_max_attempts,
            confirm_timeout=config.confirm_timeout_seconds, on_transition=on_transition,
        )
        self.reconciler = Reconciler(
            database, client, confirm_timeout=config.confirm_timeout_seconds,
            on_probe=lambda outcome: self.metrics.probes.labels(outcome=outcome).inc(), on_transition=on_transition,
        )
        self.sender = sender_lease(config, database, self.holder)
        # Callbacks spooled during a database outage are drained here too, in case no web
        # process on this host is left to do it.
        self.drainer = SpoolDrainer(Spool(config.spool_dir), database, on_drained=self.metrics.drained.inc)
        self.reconcile_lease = DatabaseLease(database, RECONCILER_LEASE, self.holder, ttl=30)

    def stop(self, *_args) -> None:
        self.stop_event.set()
        self.dispatcher.stopping.set()

    def run(self) -> None:
        """Loop until stop(): claim and send while holding the sender lease, reconcile on schedule."""
        log.info("worker started", extra={"worker": self.holder, "shared_limit": bool(self.config.redis_url)})
        next_reconcile = next_drain = 0.0
        leading = False
        while not self.stop_event.is_set():
            try:
                if time.monotonic() >= next_drain:
                    next_drain = time.monotonic() + self.settings.drain_interval
                    if self.drainer.spool.segments():
                        self.drainer.drain_once()
                if not self.sender.ensure():
                    if leading:
                        log.warning("lost the sender lease; standing by", extra={"worker": self.holder})
                        leading = False
                    self.stop_event.wait(self.settings.standby_interval)
                    continue
                if not leading:
                    log.info("holding the sender lease", extra={"worker": self.holder})
                    leading = True
                started = self.dispatcher.pump() if self.sender.valid() else 0
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + self.settings.reconcile_interval
                    if self.reconcile_lease.ensure():
                        # Probes call IM too: stop between batches if the sender lease runs low.
                        self.reconciler.run_once(keep_going=lambda: self.sender.valid() and self.reconcile_lease.valid())
                if started == 0:
                    self.stop_event.wait(self.settings.poll_interval)
            except Exception:
                # The database may be down: keep what we hold, wait, and try again.
                log.exception("worker loop error; retrying", extra={"worker": self.holder})
                self.stop_event.wait(1.0)
        self.dispatcher.close()
        for lease in (self.sender, self.reconcile_lease):
            try:
                lease.release()
            except Exception:
                log.warning("could not release a lease on stop", extra={"worker": self.holder})
        log.info("worker stopped", extra={"worker": self.holder})


def run_worker(config: Config, database: Database, metrics: Metrics | None = None) -> None:
    """Run a worker in the foreground; SIGTERM/SIGINT finish the calls in flight, then stop."""
    worker = Worker(config, database, build_client(config, metrics), metrics=metrics)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
