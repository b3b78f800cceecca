"""Follow dismissals to their final states (for the CLI's progress bar and `status`)."""

from __future__ import annotations

import time
from collections import Counter

import click
from sqlalchemy import select

from receiver.db import Database
from receiver.models import FINAL_STATUSES, Dismissal


def _counts(database: Database, ids: list[str]) -> Counter:
    counts: Counter = Counter()
    with database.session_scope() as session:
        for i in range(0, len(ids), 1000):
            for status in session.scalars(select(Dismissal.status).where(Dismissal.id.in_(ids[i:i + 1000]))):
                counts[status.value] += 1
    return counts


def wait_for_final(database: Database, ids: list[str], *, timeout: float, interval: float = 0.5) -> dict[str, int]:
    """Poll until every dismissal is final (or timeout), drawing a progress bar; return counts.

    Each id counts once: a group listed twice (or in two chunks of a large request) comes back as
    the same dismissal, which the database counts once.
    """
    ids = list(dict.fromkeys(ids))
    deadline = time.monotonic() + timeout
    done = 0
    counts: Counter = Counter()
    with click.progressbar(length=len(ids), label="dismissing", show_pos=True) as bar:
        while True:
            counts = _counts(database, ids)
            final = sum(counts[s.value] for s in FINAL_STATUSES)
            bar.update(final - done)
            done = final
            if final >= len(ids) or time.monotonic() > deadline:
                break
            time.sleep(interval)
    out = {s.value: counts[s.value] for s in FINAL_STATUSES if counts[s.value]}
    if done < len(ids):
        out["open"] = len(ids) - done
    return out


def describe(session, dismissal_id: str) -> dict | None:
    """The dismissal as the API shows it, or None."""
    from receiver.schemas.api import dump_dismissal

    d = session.get(Dismissal, dismissal_id)
    return None if d is None else dump_dismissal(d)
