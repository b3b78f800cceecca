"""What the dashboard shows: counts, the latest dismissals, and a confirmation-latency histogram."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from receiver.models import CallbackState, Confirmation, Dismissal, Source, Status
from receiver.queries import callback_counts, dismissal_counts, dismissals_select

# Upper bounds (seconds) of the latency bars; the last bar holds everything slower.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300)
LATENCY_SAMPLE = 1000


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class LatencyChart:
    """Bars already laid out in SVG user units, so the template only draws rectangles."""

    bars: list[Bar]
    sample: int
    p50: float | None
    p95: float | None
    width: int = 640
    height: int = 180
    baseline: int = 150


@dataclass(frozen=True)
class Overview:
    by_status: dict[str, int]
    by_source: dict[str, int]
    quarantined: int
    latest: list[Dismissal]
    latency: LatencyChart


def _percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    rank = p * (len(sorted_values) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _bucket_label(i: int) -> str:
    def fmt(v: float) -> str:
        return f"{v:g}s" if v < 60 else f"{v / 60:g}m"

    if i == 0:
        return f"≤{fmt(LATENCY_BUCKETS[0])}"
    if i == len(LATENCY_BUCKETS):
        return f">{fmt(LATENCY_BUCKETS[-1])}"
    return f"≤{fmt(LATENCY_BUCKETS[i])}"


def latency_chart(latencies: list[float], *, width: int = 640, height: int = 180) -> LatencyChart:
    """Lay out a histogram of confirmation latencies (seconds) as SVG bars."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for value in latencies:
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if value <= bound), len(LATENCY_BUCKETS))
        counts[index] += 1
    baseline, top = height - 30, 16
    slot = width / len(counts)
    peak = max(counts) or 1
    bars = []
    for i, n in enumerate(counts):
        h = (baseline - top) * n / peak
        bars.append(Bar(_bucket_label(i), n, round(i * slot + 6, 1), round(baseline - h, 1), round(slot - 12, 1),
                        round(h, 1)))
    ordered = sorted(latencies)
    return LatencyChart(bars, len(latencies), _percentile(ordered, 0.5), _percentile(ordered, 0.95),
                        width=width, height=height, baseline=baseline)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def overview(*, session: Session, limit: int = 50) -> Overview:
    """Counts by status and source, the newest `limit` dismissals, and recent confirmation latency."""
    by_status, by_source = dismissal_counts(session=session)
    quarantined = callback_counts(session=session)[CallbackState.QUARANTINED.value]
    latest = list(session.scalars(dismissals_select().order_by(Dismissal.id.desc()).limit(limit)).unique())
    # Latency of our own dismissals confirmed by evidence (not 10010), newest first by id.
    rows = session.execute(
        select(Dismissal.requested_at, Dismissal.confirmed_at)
        .where(Dismissal.source == Source.API, Dismissal.status == Status.CONFIRMED,
               Dismissal.confirmation.in_((Confirmation.CALLBACK, Confirmation.PROBE)),
               Dismissal.requested_at.is_not(None), Dismissal.confirmed_at.is_not(None))
        .order_by(Dismissal.id.desc())
        .limit(LATENCY_SAMPLE)
    ).all()
    chart = latency_chart([_seconds(r.requested_at, r.confirmed_at) for r in rows])
    return Overview(by_status, by_source, quarantined, latest, chart)
