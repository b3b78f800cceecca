"""`POST /im/callback`: the URL registered in the IM console; always answers Tencent's envelope."""

from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError

from receiver.callbacks import verify
from receiver.callbacks.service import RequestMeta, quarantine, record_group_destroyed
from receiver.db import get_session
from receiver.schemas.tencent import GROUP_DESTROYED, GroupDestroyedSchema, describe_errors

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

MAX_BODY_BYTES = 1024 * 1024
ERR_BAD_REQUEST = 4000
ERR_TOO_LARGE = 4130

_schema = GroupDestroyedSchema()


def envelope(http_status: int = 200, error_code: int = 0, info: str = ""):
    body = {"ActionStatus": "OK" if error_code == 0 else "FAIL", "ErrorCode": error_code, "ErrorInfo": info}
    return jsonify(body), http_status


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"duplicate key {key!r} in JSON body")
        obj[key] = value
    return obj


def _small_int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _meta() -> RequestMeta:
    args = request.args
    # Sign is a credential derivative: keep it out of the stored query string.
    query = "&".join(
        f"{k}={v}" for k, vs in args.lists() for v in vs if k != "Sign"
    )
    return RequestMeta(
        query_string=query[:4000],
        sdkappid=_small_int(args.get("SdkAppid")),
        command=args.get("CallbackCommand"),
        client_ip=args.get("ClientIP"),
        opt_platform=args.get("OptPlatform"),
        request_time=_small_int(args.get("RequestTime")),
        content_type=request.content_type,
        remote_addr=request.remote_addr,
    )


def _metrics():
    return current_app.extensions["receiver.metrics"]


@bp.post("/im/callback")
def im_callback():
    """Receive one IM callback: verify, validate, store once, acknowledge."""
    config = current_app.config["RECEIVER"]
    started = time.perf_counter()
    command = request.args.get("CallbackCommand")
    metrics = _metrics()

    def done(outcome: str, response):
        metrics.callback_handled(command or "", outcome, time.perf_counter() - started)
        return response

    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return done("too_large", envelope(413, ERR_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes"))
    try:
        verify.check_address(request.remote_addr, config.im_callback_allowed_ips)
        verify.check_sdkappid(request.args.get("SdkAppid"), config.im_sdkappid)
        verify.check_sign(
            request.args.get("Sign"),
            request.args.get("RequestTime"),
            config.im_callback_tokens,
            now=time.time(),
            max_skew_seconds=config.im_callback_max_skew_seconds,
        )
    except verify.CallbackRejected as rejected:
        log.warning("callback rejected", extra={"reason": rejected.reason, "command": command, "remote_addr": request.remote_addr})
        return done(f"rejected_{rejected.reason}", envelope(rejected.http_status, rejected.error_code, rejected.info))

    if command is not None and command != GROUP_DESTROYED:
        # Never hold up (or veto) a "before" callback we do not handle.
        return done("ignored", envelope())

    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return done("too_large", envelope(413, ERR_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes"))
    meta = _meta()

    def reject(reason: str, group_id=None):
        callback_id = quarantine(get_session(), reason=reason, raw_body=raw, meta=meta, group_id=group_id)
        log.warning("callback quarantined", extra={"reason": reason, "callback_id": callback_id, "command": command})
        return done("quarantined", envelope(400, ERR_BAD_REQUEST, reason))

    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError:
        return reject("body is not valid UTF-8")
    except _DuplicateKey as exc:
        return reject(f"malformed JSON: {exc}")
    except (ValueError, RecursionError) as exc:
        return reject(f"malformed JSON: {str(exc)[:200]}" if isinstance(exc, ValueError) else "malformed JSON: nested too deeply")
    if not isinstance(body, dict):
        return reject("JSON body must be an object")
    body_command = body.get("CallbackCommand")
    group_id = body.get("GroupId") if isinstance(body.get("GroupId"), str) else None
    if command is None:
        if body_command != GROUP_DESTROYED:
            if isinstance(body_command, str) and body_command:
                return done("ignored", envelope())
            return reject("CallbackCommand is missing from the query string and the body", group_id)
        command = body_command
        meta = RequestMeta(**{**meta.__dict__, "command": command})
    elif body_command != command:
        return reject(f"CallbackCommand in the body ({str(body_command)[:80]!r}) does not match the query ({command!r})", group_id)
    try:
        data = _schema.load(body)
    except ValidationError as err:
        return reject(f"invalid {GROUP_DESTROYED} body: {describe_errors(err)}"[:1000], group_id)

    result = record_group_destroyed(get_session(), data=data, body=body, raw_body=raw, meta=meta)
    log.info(
        "callback %s", result.outcome,
        extra={"callback_id": result.callback_id, "group_id": data["group_id"], "dismissal_id": result.dismissal_id,
               "matched_request": result.matched_request},
    )
    return done(result.outcome, envelope())
