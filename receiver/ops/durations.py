"""Parse operator durations such as `90d`, `12h`, `30m`, `45s`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_PATTERN = re.compile(r"\s*(\d{1,6})\s*([dhms])\s*", re.I | re.ASCII)
# A cutoff this far back is still a date (999999d before now is not: an OverflowError).
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: str) -> timedelta:
    """`90d` → 90 days; raise ValueError with a readable message for anything else."""
    match = _PATTERN.fullmatch(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, e.g. 90d, 12h, 30m or 45s")
    amount, unit = int(match.group(1)), match.group(2).lower()
    if amount == 0:
        raise ValueError("the duration must be greater than zero")
    duration = timedelta(**{_UNITS[unit]: amount})
    if duration > MAX_DURATION:
        raise ValueError(f"{text.strip()!r} is too long: at most {MAX_DURATION.days}d")
    return duration
