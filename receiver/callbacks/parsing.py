"""Validate a callback body as a pure function: the endpoint, the spool drain and `replay` share it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from receiver.schemas.tencent import GROUP_DESTROYED, GroupDestroyedSchema, describe_errors
from receiver.textsafety import UNSTORABLE_MESSAGE, is_storable

_schema = GroupDestroyedSchema()


@dataclass(frozen=True)
class Parsed:
    """A dismissed-group callback that passed validation."""

    data: dict[str, Any]
    body: dict[str, Any]
    command: str


@dataclass(frozen=True)
class Refused:
    reason: str
    ignored: bool = False  # a command we do not handle: nothing to store, nothing wrong


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"duplicate key {key!r} in JSON body")
        obj[key] = value
    return obj


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; JSON has neither


# One decoder for every body: json.loads builds a new one whenever it is given a hook.
_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)


def validate_body(raw: bytes, query_command: str | None) -> Parsed | Refused:
    """Decode and validate a callback body; say why when it cannot be accepted."""
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        body = _decoder.decode(text)
    except UnicodeDecodeError:
        return Refused("body is not valid UTF-8")
    except RecursionError:
        return Refused("malformed JSON: nested too deeply")
    except ValueError as exc:
        return Refused(f"malformed JSON: {str(exc)[:200]}")
    if not isinstance(body, dict):
        return Refused("JSON body must be an object")
    body_command = body.get("CallbackCommand")
    if query_command is None:
        if body_command != GROUP_DESTROYED:
            if isinstance(body_command, str) and body_command:
                return Refused(f"{body_command[:80]!r} is not a command this service stores", ignored=True)
            return Refused("CallbackCommand is missing from the query string and the body")
    elif query_command != GROUP_DESTROYED:
        return Refused(f"{query_command[:80]!r} is not a command this service stores", ignored=True)
    elif body_command != query_command:
        return Refused(f"CallbackCommand in the body ({str(body_command)[:80]!r}) does not match the query ({query_command!r})")
    try:
        data = _schema.load(body)
    except ValidationError as err:
        return Refused(f"invalid {GROUP_DESTROYED} body: {describe_errors(err)}"[:1000])
    # Strict UTF-8 holds no surrogate, so a body with no NUL and no \u escape decodes to storable
    # text throughout; only the others need their validated strings walked.
    if ("\\u" in text or "\x00" in text) and not all(is_storable(v) for v in _strings(data)):
        return Refused(f"invalid {GROUP_DESTROYED} body: text fields {UNSTORABLE_MESSAGE}")
    return Parsed(data, body, GROUP_DESTROYED)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def group_id_of(raw: bytes) -> str | None:
    """The GroupId of a body that failed validation, if one can be read (for the quarantine row)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    value = body.get("GroupId") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None
