"""Metrics keeps the labelled children of its per-request metrics; each count still lands on its own labels."""

from __future__ import annotations

from receiver.metrics import Metrics

CMD = "Group.CallbackAfterGroupDestroyed"


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_callback_counts_and_latencies_keep_their_labels():
    metrics = Metrics()
    for outcome, seconds in (("stored", 0.002), ("stored", 0.004), ("duplicate", 0.3)):
        metrics.callback_handled(CMD, outcome, seconds)
    metrics.callback_handled("Group.CallbackBeforeCreateGroup", "ignored", 0.001)
    metrics.callback_handled("", "rejected_sign", 0.001)
    assert sample(metrics, "receiver_callbacks_total", command=CMD, outcome="stored") == 2
    assert sample(metrics, "receiver_callbacks_total", command=CMD, outcome="duplicate") == 1
    assert sample(metrics, "receiver_callbacks_total", command="other", outcome="ignored") == 1
    assert sample(metrics, "receiver_callbacks_total", command="", outcome="rejected_sign") == 1
    assert sample(metrics, "receiver_callback_seconds_count", outcome="stored") == 2
    assert abs(sample(metrics, "receiver_callback_seconds_sum", outcome="stored") - 0.006) < 1e-9
    assert sample(metrics, "receiver_callback_seconds_bucket", outcome="duplicate", le="0.25") == 0
    assert sample(metrics, "receiver_callback_seconds_bucket", outcome="duplicate", le="0.5") == 1


def test_http_requests_are_counted_by_endpoint_and_status():
    metrics = Metrics()
    for endpoint, status in (("/im/callback", 200), ("/im/callback", 200), ("/im/callback", 401), ("/healthz", 200)):
        metrics.http_request(endpoint, status)
    assert sample(metrics, "receiver_http_requests_total", endpoint="/im/callback", status="200") == 2
    assert sample(metrics, "receiver_http_requests_total", endpoint="/im/callback", status="401") == 1
    assert sample(metrics, "receiver_http_requests_total", endpoint="/healthz", status="200") == 1


def test_two_registries_do_not_share_children():
    first, second = Metrics(), Metrics()
    first.http_request("/im/callback", 200)
    second.http_request("/im/callback", 200)
    second.http_request("/im/callback", 200)
    assert sample(first, "receiver_http_requests_total", endpoint="/im/callback", status="200") == 1
    assert sample(second, "receiver_http_requests_total", endpoint="/im/callback", status="200") == 2
