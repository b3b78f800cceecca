"""Prometheus metrics (official client; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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

    def callback_handled(self, command: str, outcome: str, seconds: float) -> None:
        label = command if command in KNOWN_COMMANDS else ("" if not command else "other")
        self.callbacks.labels(command=label, outcome=outcome).inc()
        self.callback_latency.labels(outcome=outcome).observe(seconds)
