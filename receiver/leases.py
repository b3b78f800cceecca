"""Named, expiring leases in the database: which process may act alone (sole IM sender, reconciler)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import delete, or_, update

from receiver.db import Database
from receiver.models import Lease, utcnow
from receiver.sqlutil import insert_ignoring_conflicts


class DatabaseLease:
    """Hold lease `name` for `ttl` seconds at a time; renew by calling `ensure()` often.

    A holder that dies simply stops renewing, and another process takes over once the lease
    expires. `held_until` is what this process may rely on: it stops acting before then.
    """

    def __init__(self, database: Database, name: str, holder: str, ttl: float, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.name = name
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self._clock = clock
        self.held_until: datetime | None = None

    def ensure(self) -> bool:
        """Take or renew the lease; True while this process holds it."""
        now = self._clock()
        if self.held_until is not None and self.held_until - now > self.ttl * (2 / 3):
            return True  # renewed recently enough
        expires = now + self.ttl
        with self.database.session_scope() as session:
            moved = session.execute(
                update(Lease)
                .where(Lease.name == self.name, or_(Lease.holder == self.holder, Lease.expires_at < now))
                .values(holder=self.holder, expires_at=expires)
            ).rowcount
            if not moved:
                moved = session.execute(
                    insert_ignoring_conflicts(session, Lease, index_elements=[Lease.name])
                    .values(name=self.name, holder=self.holder, expires_at=expires)
                ).rowcount
        self.held_until = expires if moved else None
        return bool(moved)

    def valid(self) -> bool:
        """True if the lease is held for at least a fifth of its ttl more: time to finish a call."""
        return self.held_until is not None and self.held_until - self._clock() > self.ttl / 5

    def release(self) -> None:
        if self.held_until is None:
            return
        with self.database.session_scope() as session:
            session.execute(delete(Lease).where(Lease.name == self.name, Lease.holder == self.holder))
        self.held_until = None


class AlwaysHeld:
    """Stands in for a lease when every process may act (a shared Redis rate limit)."""

    held_until = None

    def ensure(self) -> bool:
        return True

    def valid(self) -> bool:
        return True

    def release(self) -> None:
        pass
