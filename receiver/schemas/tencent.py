"""Tencent IM callback bodies: lenient where Tencent varies, strict where a body is broken."""

from __future__ import annotations

from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"

# Accounts and group IDs are printable ASCII in IM; we still accept any text, bounded in length.
_group_id = validate.Length(min=1, max=128)  # the dismissals/group_members columns
_account = validate.Length(min=1, max=128)


# The last millisecond of 9999-12-31: later times cannot become a datetime (nor are they real).
_MAX_EVENT_TIME_MS = 253402300799999


class EventTimeField(fields.Field):
    """Milliseconds since the epoch, sent as a number or a numeric string (the doc shows both)."""

    default_error_messages = {"invalid": "EventTime must be milliseconds since the epoch, as a number or numeric string."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, str):
            value = value.strip()
            if not value.isdigit():
                raise self.make_error("invalid")
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not (0 <= value <= _MAX_EVENT_TIME_MS):
            raise self.make_error("invalid")
        return value


class MemberSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    account = fields.String(data_key="Member_Account", required=True, validate=_account)


class GroupDestroyedSchema(Schema):
    """`Group.CallbackAfterGroupDestroyed` (tencent-im.md §2); unknown fields stay in the raw body."""

    class Meta:
        unknown = EXCLUDE

    command = fields.String(data_key="CallbackCommand", required=True)
    group_id = fields.String(data_key="GroupId", required=True, validate=_group_id)
    group_type = fields.String(data_key="Type", required=True, validate=validate.Length(min=1, max=32))
    owner_account = fields.String(data_key="Owner_Account", allow_none=True, validate=validate.Length(max=128))
    name = fields.String(data_key="Name", allow_none=True)
    # Absent for Community groups.
    members = fields.List(fields.Nested(MemberSchema), data_key="MemberList", allow_none=True)
    event_time_ms = EventTimeField(data_key="EventTime", allow_none=True)


def event_time_from_ms(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def describe_errors(err: ValidationError) -> str:
    """Flatten marshmallow's messages into one readable line for ErrorInfo."""
    parts: list[str] = []

    def walk(prefix: str, messages) -> None:
        if isinstance(messages, dict):
            for key, value in messages.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
            parts.append(f"{prefix}: {' '.join(messages)}" if prefix else " ".join(messages))
        elif isinstance(messages, list):
            for i, value in enumerate(messages):
                walk(f"{prefix}[{i}]", value)
        else:
            parts.append(f"{prefix}: {messages}")

    walk("", err.messages)
    return "; ".join(parts)
