"""Tencent IM callback bodies: lenient where Tencent varies, strict where a body is broken."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from receiver.textsafety import is_decimal

GROUP_DESTROYED = "Group.CallbackAfterGroupDestroyed"

# Accounts and group IDs are printable ASCII in IM; we still accept any text, bounded in length.
_group_id = validate.Length(min=1, max=128)  # the dismissals/group_members columns
_ACCOUNT_MAX = 128  # the group_members column


# The last millisecond of 9999-12-30, a day short of the last a datetime holds: PostgreSQL hands
# times back in the session's time zone, and on a server east of UTC the year's last hours would
# come back as year 10000, which no datetime holds (every page listing them would fail). Nor
# are such times real.
MAX_EVENT_TIME_MS = 253402214399999
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EventTimeField(fields.Field):
    """Milliseconds since the epoch, sent as a number or a numeric string (the doc shows both)."""

    default_error_messages = {"invalid": "EventTime must be milliseconds since the epoch, as a number or numeric string."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, str):
            value = value.strip()
            if not is_decimal(value) or len(value) > 15:  # the latest accepted has 15 digits
                raise self.make_error("invalid")
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not (0 <= value <= MAX_EVENT_TIME_MS):
            raise self.make_error("invalid")
        return value


class MemberListField(fields.Field):
    """`MemberList`: `[{"Member_Account": str, ...}]` → `[{"account": str}]`, other keys ignored.

    One field rather than a List of Nested schemas: every callback carries the whole member list,
    and a nested schema per member was most of the cost of validating a callback. The errors are
    the ones the nested schema gave, keyed by index.
    """

    default_error_messages = {
        "invalid": "Not a valid list.",
        "invalid_member": "Invalid input type.",
        "required": "Missing data for required field.",
        "null_account": "Field may not be null.",
        "invalid_account": "Not a valid string.",
        "account_length": f"Length must be between 1 and {_ACCOUNT_MAX}.",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        errors: dict[int, dict[str, list[str]] | list[str]] = {}
        members = []
        for index, member in enumerate(value):
            if member is None:
                errors[index] = [self.error_messages["null"]]
                continue
            if not isinstance(member, dict):
                errors[index] = {"_schema": [self.error_messages["invalid_member"]]}
                continue
            account = member.get("Member_Account")
            problem = ("required" if "Member_Account" not in member
                       else "null_account" if account is None
                       else "invalid_account" if not isinstance(account, str)
                       else "account_length" if not 1 <= len(account) <= _ACCOUNT_MAX else None)
            if problem:
                errors[index] = {"Member_Account": [self.error_messages[problem]]}
            else:
                members.append({"account": account})
        if errors:
            raise ValidationError(errors)
        return members


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
    members = MemberListField(data_key="MemberList", allow_none=True)
    event_time_ms = EventTimeField(data_key="EventTime", allow_none=True)


def event_time_from_ms(ms: int | None) -> datetime | None:
    """The UTC time of IM's EventTime, to the millisecond (in integers: `ms / 1000` as a float
    loses the last millisecond of times far enough ahead, 9999-12-30T23:59:59.999 → .998993)."""
    if ms is None:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


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
