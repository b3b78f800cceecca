"""Our /v1 API's wire format: strict request schemas in, dismissal and callback documents out."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta, timezone

import orjson
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, pre_dump, validate

from receiver.models import CallbackState, Confirmation, Dismissal, Source, Status
from receiver.queries import ShownDismissal
from receiver.textsafety import is_storable

MAX_BATCH = 10_000
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_WAIT_SECONDS = 30
# Raw bodies of stored callbacks are shown decoded (lossily) and cut to this many bytes.
RAW_BODY_PREVIEW_BYTES = 4096

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and Z, e.g. 2026-11-29T20:41:08.123Z.

    Cut from orjson's spelling (microseconds, or none for a whole second): a list page writes
    a few hundred of these, and `isoformat(timespec="milliseconds")` took 2.4 times as long
    (`strftime` twice that again). Truncated to the millisecond, as `isoformat` does.
    """
    if value.tzinfo is not timezone.utc:  # the database's values already are (models.UTCDateTime)
        value = value.astimezone(timezone.utc)
    text = orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()  # "YYYY-MM-DDTHH:MM:SS[.ffffff]Z", quoted
    return text[1:24] + "Z" if value.microsecond else text[1:20] + ".000Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time with a zone offset (Z or ±hh:mm) into an aware UTC datetime."""
    match = _RFC3339.match(text)
    if not match:
        raise ValueError("not an RFC 3339 time with a zone, e.g. 2026-11-29T20:41:08.123Z")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int(((fraction or ".")[1:] + "000000")[:6])
    offset = 0
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        hh, mm = int(zone[1:3]), int(zone[4:6])
        if hh > 23 or mm > 59:
            raise ValueError("zone offset out of range")
        offset = sign * (hh * 60 + mm)
    try:
        naive = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro)
        return (naive - timedelta(minutes=offset)).replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise ValueError("date or time out of range") from None


class Time(fields.DateTime):
    """An RFC 3339 UTC time: written with milliseconds and Z, read with any zone offset."""

    default_error_messages = {"invalid": "Not a valid RFC 3339 time with a zone, e.g. 2026-11-29T20:41:08.123Z."}

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else format_time(value)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_time(value.strip())
        except ValueError:
            raise self.make_error("invalid") from None


def encode_cursor(last_id: str) -> str:
    """The opaque cursor that continues a listing after the row `last_id`."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The row id a cursor continues after; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id = raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor returned by this API") from None
    if not _ULID.match(last_id) or encode_cursor(last_id) != cursor:
        raise ValueError("not a cursor returned by this API")
    return last_id


class Cursor(fields.String):
    """An opaque pagination cursor (read as the id of the last row seen)."""

    default_error_messages = {"invalid_cursor": "Not a cursor returned by this API (use next_cursor as given)."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(text)
        except ValueError:
            raise self.make_error("invalid_cursor") from None


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- requests -----------------------------------------------------------------------------------

def _storable(value: str) -> None:
    if not is_storable(value):
        raise ValidationError("Must not contain NUL or unpaired surrogate characters.")


_reason = fields.String(allow_none=True, load_default=None, validate=[validate.Length(max=2000), _storable],
                        metadata={"description": "Why the group is dismissed (free text, kept with the record)."})
_requested_by = fields.String(allow_none=True, load_default=None, validate=[validate.Length(max=200), _storable],
                              metadata={"description": "Who or what asked for it (a service or user name)."})


# IM group IDs are printable ASCII (0x20-0x7e), at most 48 bytes (tencent-im.md §5).
_GROUP_ID_RULES = [validate.Length(min=1, max=48),
                   validate.Regexp(r"^[ -~]*$", error="Must be printable ASCII (0x20-0x7e).")]


def _group_id(**kwargs) -> fields.String:
    return fields.String(validate=_GROUP_ID_RULES, **kwargs)


class DismissalRequestSchema(StrictSchema):
    group_id = _group_id(required=True, metadata={
        "description": "The IM group ID: printable ASCII, at most 48 bytes.", "example": "@TGS#2J4SZEAEL"})
    reason = _reason
    requested_by = _requested_by


class BatchRequestSchema(StrictSchema):
    group_ids = fields.List(
        _group_id(), required=True, validate=validate.Length(min=1, max=MAX_BATCH),
        metadata={"description": f"The IM group IDs to dismiss (1 to {MAX_BATCH}; repeats are merged)."})
    reason = _reason
    requested_by = _requested_by


class IdempotencyHeaderSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # every other request header is none of our business

    idempotency_key = fields.String(
        data_key="Idempotency-Key", validate=[validate.Length(min=1, max=200), _storable],
        metadata={"description": "Makes a retried POST safe: the same key and body return the same dismissal; "
                                 "the same key with another body is refused (422)."})


class WaitQuerySchema(StrictSchema):
    wait = fields.Float(
        load_default=0.0, validate=validate.Range(min=0, max=MAX_WAIT_SECONDS),
        metadata={"description": f"Seconds (0 to {MAX_WAIT_SECONDS}) to wait for a final state "
                                 "(confirmed, failed, unconfirmed) before answering."})


class PageQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT),
                           metadata={"description": f"Items per page (1 to {MAX_LIMIT})."})
    cursor = Cursor(metadata={"description": "The next_cursor of the previous page."})


_since = Time(metadata={
    "description": "Only records created at or after this time (millisecond precision)."})
_until = Time(metadata={"description": "Only records created before this time."})


class DismissalListQuerySchema(PageQuerySchema):
    status = fields.Enum(Status, by_value=True, metadata={"description": "Only dismissals in this status."})
    source = fields.Enum(Source, by_value=True, metadata={
        "description": "Only dismissals we started (api) or observed from IM (external)."})
    group_id = fields.String(validate=validate.Length(min=1, max=200), metadata={"description": "Only this group."})
    since = _since
    until = _until


class CallbackListQuerySchema(PageQuerySchema):
    command = fields.String(validate=validate.Length(min=1, max=200),
                            metadata={"description": "CallbackCommand, e.g. Group.CallbackAfterGroupDestroyed."})
    group_id = fields.String(validate=validate.Length(min=1, max=200), metadata={"description": "Only this group."})
    state = fields.Enum(CallbackState, by_value=True, metadata={
        "description": "Only accepted callbacks, or only quarantined (refused) requests."})
    since = _since
    until = _until


# --- responses ----------------------------------------------------------------------------------


class LastErrorSchema(Schema):
    code = fields.Integer(required=True, metadata={"description": "IM ErrorCode (or a local code)."})
    info = fields.String(required=True)


class CallbackSummarySchema(Schema):
    event_time = Time(allow_none=True, metadata={"description": "IM's EventTime (null when IM sent none)."})
    group_type = fields.String(allow_none=True)
    owner_account = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    member_count = fields.Integer(allow_none=True)
    opt_platform = fields.String(allow_none=True)
    received_at = Time()


class DismissalSchema(Schema):
    id = fields.String(required=True)
    group_id = fields.String(required=True)
    sdkappid = fields.Integer(required=True)
    source = fields.Enum(Source, by_value=True, required=True)
    status = fields.Enum(Status, by_value=True, required=True)
    confirmation = fields.Enum(Confirmation, by_value=True, allow_none=True)
    reason = fields.String(allow_none=True)
    requested_by = fields.String(allow_none=True)
    requested_at = Time(allow_none=True)
    sent_at = Time(allow_none=True)
    confirmed_at = Time(allow_none=True)
    attempts = fields.Integer(required=True)
    last_error = fields.Nested(LastErrorSchema, allow_none=True)
    callback = fields.Nested(CallbackSummarySchema, allow_none=True)

    @pre_dump
    def _from_model(self, d, **_kwargs):
        return {
            "id": d.id, "group_id": d.group_id, "sdkappid": d.sdkappid, "source": d.source, "status": d.status,
            "confirmation": d.confirmation, "reason": d.reason, "requested_by": d.requested_by,
            "requested_at": d.requested_at, "sent_at": d.sent_at, "confirmed_at": d.confirmed_at,
            "attempts": d.attempts,
            "last_error": None if d.last_error_code is None else {"code": d.last_error_code, "info": d.last_error_info or ""},
            "callback": d.callback,
        }

    def dump(self, obj, *, many=None):
        """The fields above, dumped: written out for Dismissal rows, the generic way for anything else.

        Dismissal documents are what the API writes most (50 to 1,000 per list page, up to 10,000
        in a batch answer), and marshmallow's generic dump took about 40 % of a list page's time.
        The fields stay the definition (and the OpenAPI document's); `_dismissal_document` must
        give what the generic dump gives, key for key: tests/unit/test_dismissal_document.py
        compares the two over every status, source and confirmation and every null.
        """
        many = self.many if many is None else bool(many)
        if self.only is None and not self.exclude:
            if many:
                rows = obj if isinstance(obj, list) else list(obj)
                if all(isinstance(d, _WRITTEN_OUT) for d in rows):
                    return [_dismissal_document(d) for d in rows]
                obj = rows
            elif isinstance(obj, _WRITTEN_OUT):
                return _dismissal_document(obj)
        return super().dump(obj, many=many)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _value(member) -> str | None:
    return None if member is None else member.value


# What `_dismissal_document` reads: ORM rows, and the plain rows list pages are read as.
_WRITTEN_OUT = (Dismissal, ShownDismissal)


def _dismissal_document(d: Dismissal | ShownDismissal) -> dict:
    """`DismissalSchema`'s document of one row, without the generic machinery (see `DismissalSchema.dump`)."""
    c = d.callback
    return {
        "id": d.id, "group_id": d.group_id, "sdkappid": d.sdkappid, "source": _value(d.source),
        "status": _value(d.status), "confirmation": _value(d.confirmation), "reason": d.reason,
        "requested_by": d.requested_by, "requested_at": _time(d.requested_at), "sent_at": _time(d.sent_at),
        "confirmed_at": _time(d.confirmed_at), "attempts": d.attempts,
        "last_error": None if d.last_error_code is None else {"code": d.last_error_code, "info": d.last_error_info or ""},
        "callback": None if c is None else {
            "event_time": _time(c.event_time), "group_type": c.group_type, "owner_account": c.owner_account,
            "name": c.name, "member_count": c.member_count, "opt_platform": c.opt_platform,
            "received_at": _time(c.received_at),
        },
    }


_dismissal_schema = DismissalSchema()


def dump_dismissal(dismissal) -> dict:
    """The CONTRACT §4 JSON document of one Dismissal row."""
    return _dismissal_schema.dump(dismissal)


class DismissalPageSchema(Schema):
    items = fields.List(fields.Nested(DismissalSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True,
                                metadata={"description": "Pass as cursor for the next page; null on the last page."})


class DismissalItemsSchema(Schema):
    items = fields.List(fields.Nested(DismissalSchema), required=True,
                        metadata={"description": "One dismissal per distinct group, in request order."})


class GroupSchema(Schema):
    group_id = fields.String(required=True)
    dismissals = fields.List(fields.Nested(DismissalSchema), required=True,
                             metadata={"description": "Newest first (at most 200; page with GET /v1/dismissals?group_id=)."})
    members = fields.List(fields.String(), required=True,
                          metadata={"description": "Member accounts listed by the latest dismissal callback of the group."})


class StoredCallbackSchema(Schema):
    id = fields.String(required=True)
    state = fields.Enum(CallbackState, by_value=True, required=True)
    quarantine_reason = fields.String(allow_none=True, metadata={"description": "Why a quarantined request was refused."})
    sdkappid = fields.Integer(allow_none=True)
    command = fields.String(allow_none=True)
    group_id = fields.String(allow_none=True)
    group_type = fields.String(allow_none=True)
    owner_account = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    member_count = fields.Integer(allow_none=True)
    event_time = Time(allow_none=True)
    client_ip = fields.String(allow_none=True)
    opt_platform = fields.String(allow_none=True)
    query_string = fields.String(metadata={"description": "The request's query string, without Sign."})
    content_type = fields.String(allow_none=True)
    remote_addr = fields.String(allow_none=True)
    received_at = Time()
    duplicates = fields.Integer(metadata={"description": "Further deliveries of the same event."})
    dismissal_id = fields.String(allow_none=True, metadata={"description": "The dismissal this callback confirmed or recorded."})
    raw_body = fields.String(metadata={
        "description": f"The request body as received, decoded as UTF-8 with replacement characters, "
                       f"cut to its first {RAW_BODY_PREVIEW_BYTES} bytes."})
    raw_body_size = fields.Integer(metadata={"description": "Size of the whole body in bytes."})
    raw_body_truncated = fields.Boolean()


class CallbackPageSchema(Schema):
    items = fields.List(fields.Nested(StoredCallbackSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class LatencySchema(Schema):
    count = fields.Integer(metadata={"description": "API dismissals confirmed by callback or probe."})
    p50 = fields.Float(allow_none=True)
    p95 = fields.Float(allow_none=True)
    p99 = fields.Float(allow_none=True)


class StatsSchema(Schema):
    dismissals_by_status = fields.Dict(keys=fields.String(), values=fields.Integer(),
                                       metadata={"description": "Every status, with 0 for none."})
    dismissals_by_source = fields.Dict(keys=fields.String(), values=fields.Integer())
    callbacks_by_state = fields.Dict(keys=fields.String(), values=fields.Integer())
    confirmation_latency_seconds = fields.Nested(LatencySchema, metadata={
        "description": "confirmed_at - requested_at of API dismissals confirmed by callback or probe "
                       "(continuous percentiles, in seconds)."})


class ErrorSchema(Schema):
    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "The HTTP status name."})
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "Validation errors by location (json, query, headers), "
                                                  "then by field."})
