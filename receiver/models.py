"""Tables and status enums: callbacks, quarantine, dismissals, their attempts and members."""

from __future__ import annotations

import enum
import time
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from receiver.db import Base
from receiver.randomness import random_bytes

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of Crockford digits, indexed by the 10 bits they spell: a ULID is 13 such pairs.
_CROCKFORD_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_PAIR_SHIFTS = range(120, -1, -10)


def ulid(milliseconds: int, randomness: bytes) -> str:
    """The ULID of a time (48 bits of milliseconds) and 10 random bytes: 26 Crockford digits,
    the 130-bit number's top two bits zero, so ids sort by time. Spelled 10 bits at a time
    (≈ 4.3 → 2.8 µs for `new_id`; two ids per callback)."""
    value = (milliseconds << 80) | int.from_bytes(randomness, "big")
    return "".join([_CROCKFORD_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def new_id() -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    return ulid(int(time.time() * 1000), random_bytes(10))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @staticmethod
    def json_processor():
        """For PostgreSQL's JSON bulk inserts (`sqlutil`): the datetime itself, refused if naive
        (orjson spells an aware one in ISO 8601, offset included, as `isoformat` does)."""
        return _aware


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given; use timezone-aware UTC")
    return value


class Source(str, enum.Enum):
    API = "api"
    EXTERNAL = "external"


class Status(str, enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    AWAITING_CALLBACK = "awaiting_callback"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


OPEN_STATUSES = (Status.QUEUED, Status.SENDING, Status.RETRYING, Status.AWAITING_CALLBACK)
# Rows waiting to be sent (`ix_dismissals_due`'s condition). A fixed text, not a bound IN list: a
# query must spell it so for PostgreSQL to use the partial index in a prepared (generic) plan.
WAITING_TO_BE_SENT = "status IN ('queued', 'retrying')"
FINAL_STATUSES = (Status.CONFIRMED, Status.FAILED, Status.UNCONFIRMED)


class Confirmation(str, enum.Enum):
    CALLBACK = "callback"
    PROBE = "probe"
    ALREADY_GONE = "already_gone"


def _enum(cls, name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=24,
        values_callable=lambda members: [m.value for m in members],
    )


class CallbackState(str, enum.Enum):
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"


class Callback(Base):
    """A callback request as received: an accepted dismissed-group event (once per event, by
    `dedupe_key`) or a quarantined request kept whole with the reason it was refused."""

    __tablename__ = "callbacks"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    state: Mapped[CallbackState] = mapped_column(_enum(CallbackState, "callback_state"))
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    # NULL for quarantined requests; several NULLs never collide in a unique index.
    dedupe_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    sdkappid: Mapped[int | None] = mapped_column(BigInteger)
    command: Mapped[str | None] = mapped_column(String(200))
    group_id: Mapped[str | None] = mapped_column(String(200))
    group_type: Mapped[str | None] = mapped_column(String(32))
    owner_account: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(Text)
    member_count: Mapped[int | None] = mapped_column(Integer)
    event_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    opt_platform: Mapped[str | None] = mapped_column(String(32))
    request_time: Mapped[int | None] = mapped_column(BigInteger)
    query_string: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(200))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duplicates: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_duplicate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replay_outcome: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_callbacks_group_id_id", "group_id", "id"),
        Index("ix_callbacks_command_id", "command", "id"),
        Index("ix_callbacks_state_id", "state", "id"),
        Index("ix_callbacks_received_at", "received_at"),
    )


class Dismissal(Base):
    """One dismissal of one group, started by us (`api`) or observed from IM (`external`)."""

    __tablename__ = "dismissals"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(String(128))
    sdkappid: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[Source] = mapped_column(_enum(Source, "dismissal_source"))
    status: Mapped[Status] = mapped_column(_enum(Status, "dismissal_status"))
    confirmation: Mapped[Confirmation | None] = mapped_column(_enum(Confirmation, "dismissal_confirmation"))
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error_code: Mapped[int | None] = mapped_column(Integer)
    last_error_info: Mapped[str | None] = mapped_column(Text)
    callback_id: Mapped[str | None] = mapped_column(ForeignKey("callbacks.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Dispatcher bookkeeping: when to try next, who holds the row and until when.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    probes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    redispatches: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    callback: Mapped[Callback | None] = relationship(lazy="joined")

    __table_args__ = (
        # At most one open dismissal per group: idempotency from a unique constraint.
        Index(
            "uq_dismissals_open_group",
            "sdkappid",
            "group_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'sending', 'retrying', 'awaiting_callback')"),
            postgresql_where=text("status IN ('queued', 'sending', 'retrying', 'awaiting_callback')"),
        ),
        Index("ix_dismissals_group_id_id", "group_id", "id"),
        Index("ix_dismissals_status_id", "status", "id"),
        Index("ix_dismissals_source_id", "source", "id"),
        Index("ix_dismissals_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_dismissals_callback_id", "callback_id"),
        # The dispatcher's queue, in the order it claims (`Dispatcher.claim`): only rows waiting
        # to be sent, so a claim reads as many rows as it takes, however long the queue.
        Index("ix_dismissals_due", "next_attempt_at", "id", sqlite_where=text(WAITING_TO_BE_SENT),
              postgresql_where=text(WAITING_TO_BE_SENT)),
    )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class DismissalAttempt(Base):
    """One REST call made for a dismissal: what was sent and what IM answered."""

    __tablename__ = "dismissal_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dismissal_id: Mapped[str] = mapped_column(ForeignKey("dismissals.id", ondelete="CASCADE"))
    api: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_info: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(24))

    __table_args__ = (
        Index("ix_dismissal_attempts_dismissal_id", "dismissal_id"),
        Index("ix_dismissal_attempts_started_at", "started_at"),
    )


class GroupMember(Base):
    """A member of a dismissed group, as listed by the dismissal callback."""

    __tablename__ = "group_members"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    # The dismissal the callback listing them confirmed (its `callback_id` names that callback).
    dismissal_id: Mapped[str] = mapped_column(ForeignKey("dismissals.id", ondelete="CASCADE"))
    # The same callback again, for the previous release, which reads it: written, never read, no
    # longer a foreign key (revision 5c1e0b7d93a2), and dropped by a later release.
    callback_id: Mapped[str | None] = mapped_column(String(26))
    group_id: Mapped[str] = mapped_column(String(128))
    account: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_group_members_account_dismissal_id", "account", "dismissal_id"),
        Index("ix_group_members_dismissal_id", "dismissal_id"),
    )


class Lease(Base):
    """A named, expiring lease: which process may act alone (e.g. the sole IM sender)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
