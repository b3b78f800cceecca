"""Prometheus metrics (official client; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

log = logging.getLogger(__name__)

KNOWN_COMMANDS = {
    "Group.CallbackAfterGroupDestroyed",
}

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Every metric the service exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.callbacks = Counter(
            "receiver_callbacks_total", "IM callbacks handled, by command and outcome",
            ["command", "outcome"], registry=r,
        )
        self.callback_latency = Histogram(
            "receiver_callback_seconds", "Time to handle one IM callback", ["outcome"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.im_calls = Counter(
            "receiver_im_calls_total", "REST calls to IM, by API and ErrorCode", ["api", "error_code"], registry=r,
        )
        self.im_latency = Histogram(
            "receiver_im_call_seconds", "IM REST call latency", ["api"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.ratelimit_wait = Histogram(
            "receiver_ratelimit_wait_seconds", "Time spent waiting for the IM rate limit", ["api"],
            buckets=(0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0), registry=r,
        )
        self.transitions = Counter(
            "receiver_dismissal_transitions_total", "Dismissal status changes, by event", ["event"], registry=r,
        )
        self.probes = Counter(
            "receiver_reconciler_probes_total", "Groups probed by the reconciler, by outcome", ["outcome"], registry=r,
        )
        self.spooled = Counter("receiver_spooled_callbacks_total", "Callbacks written to the local spool", registry=r)
        self.drained = Counter("receiver_drained_callbacks_total", "Spooled callbacks stored in the database", registry=r)
        self.http_requests = Counter(
            "receiver_http_requests_total", "HTTP requests served, by endpoint and status code",
            ["endpoint", "status"], registry=r,
        )

        # The labelled children of the two per-request metrics, by label values: `labels()`
        # takes the metric's lock and builds a key every time (4 µs of the 5.5 a callback spent
        # on metrics). Bounded as the metrics themselves are (a few outcomes, routes, statuses).
        self._callback_children: dict[tuple[str, str], tuple] = {}
        self._http_children: dict[tuple[str, int], object] = {}

    def callback_handled(self, command: str, outcome: str, seconds: float) -> None:
        label = command if command in KNOWN_COMMANDS else ("" if not command else "other")
        children = self._callback_children.get((label, outcome))
        if children is None:
            children = self._callback_children[(label, outcome)] = (
                self.callbacks.labels(command=label, outcome=outcome), self.callback_latency.labels(outcome=outcome))
        children[0].inc()
        children[1].observe(seconds)

    def http_request(self, endpoint: str, status: int) -> None:
        """Count one served request (`receiver_http_requests_total`)."""
        child = self._http_children.get((endpoint, status))
        if child is None:
            child = self._http_children[(endpoint, status)] = self.http_requests.labels(endpoint=endpoint,
                                                                                        status=str(status))
        child.inc()


class DatabaseCollector:
    """Gauges read from the database at scrape time, so every process reports the same truth.

    Two GROUP BY queries on indexed columns and one MIN over the (few) rows awaiting a callback.
    """

    def __init__(self, database, *, clock=lambda: datetime.now(timezone.utc)) -> None:  # noqa: ANN001
        self.database = database
        self._clock = clock

    def collect(self):
        from receiver.models import Dismissal, Source, Status
        from receiver.queries import callback_counts

        up = GaugeMetricFamily("receiver_database_up", "Whether the scrape could read the database (1) or not (0)")
        by_status = GaugeMetricFamily("receiver_dismissals", "Dismissals by status and source",
                                      labels=["status", "source"])
        stored = GaugeMetricFamily("receiver_stored_callbacks", "Stored callback requests by state (accepted, quarantined)",
                                   labels=["state"])
        oldest = GaugeMetricFamily("receiver_oldest_awaiting_callback_seconds",
                                   "Age of the oldest dismissal sent and still awaiting its callback (0 when none)")
        started = time.perf_counter()
        try:
            with self.database.session_scope() as session:
                counts = {(s.value, src.value): 0 for s in Status for src in Source}
                for status, source, n in session.execute(
                    select(Dismissal.status, Dismissal.source, func.count()).group_by(Dismissal.status, Dismissal.source)
                ):
                    counts[(status.value, source.value)] = n
                states = callback_counts(session=session)
                sent = session.scalar(
                    select(func.min(Dismissal.sent_at)).where(Dismissal.status == Status.AWAITING_CALLBACK)
                )
        except Exception as exc:  # a scrape must still answer while the database is down
            log.warning("metrics: database unreadable", extra={"error": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for (status, source), n in counts.items():
            by_status.add_metric([status, source], n)
        for state, n in states.items():
            stored.add_metric([state], n)
        if isinstance(sent, str):  # SQLite's MIN() bypasses the column type
            sent = datetime.fromisoformat(sent)
        if sent is not None and sent.tzinfo is None:
            sent = sent.replace(tzinfo=timezone.utc)
        oldest.add_metric([], max(0.0, (self._clock() - sent).total_seconds()) if sent else 0.0)
        scrape = GaugeMetricFamily("receiver_metrics_db_query_seconds", "Time the scrape spent reading the database")
        scrape.add_metric([], time.perf_counter() - started)
        yield from (up, by_status, stored, oldest, scrape)


class _Delegate:
    """Expose another registry's metrics inside a scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self):
        return self._registry.collect()


_warned_multiproc = False


def multiprocess_enabled(multiproc_dir: Path | None) -> bool:
    """True when metric values live in PROMETHEUS_MULTIPROC_DIR files shared by every process."""
    if multiproc_dir is None:
        return False
    if values.ValueClass.__name__ != "MmapedValue":
        # prometheus-client reads the variable from the real environment when it is imported;
        # set only in a .env file, it was not seen there, so each process keeps its own values.
        global _warned_multiproc
        if not _warned_multiproc:
            _warned_multiproc = True
            log.warning("PROMETHEUS_MULTIPROC_DIR is set but prometheus-client did not see it at import; "
                        "serving this process's metrics only")
        return False
    return True


def render(metrics: Metrics, database, multiproc_dir: Path | None) -> bytes:  # noqa: ANN001
    """The Prometheus text exposition: process metrics (merged across processes) plus database gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_enabled(multiproc_dir):
        MultiProcessCollector(registry, path=str(multiproc_dir))
    else:
        registry.register(_Delegate(metrics.registry))
    registry.register(DatabaseCollector(database))
    return generate_latest(registry)
