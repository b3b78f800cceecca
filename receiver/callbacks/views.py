"""`POST /im/callback`: the URL registered in the IM console; always answers Tencent's envelope."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, g, jsonify, request

from receiver.callbacks import verify
from receiver.callbacks.outage import DATABASE_DOWN
from receiver.callbacks.parsing import Refused, validate_body
from receiver.callbacks.service import Handled, RequestMeta, handle_body, quarantine
from receiver.callbacks.spool import SpooledRequest
from receiver.db import get_database, get_session, sqlite_busy_timeout
from receiver.models import utcnow
from receiver.monitoring import annotate
from receiver.schemas.tencent import GROUP_DESTROYED

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

MAX_BODY_BYTES = 1024 * 1024
ERR_BAD_REQUEST = 4000
ERR_TOO_LARGE = 4130
ERR_INTERNAL = 5000
# Leaves room to spool and answer within the 2 s IM waits for an answer.
CALLBACK_LOCK_WAIT_MS = 1200

def envelope(http_status: int = 200, error_code: int = 0, info: str = ""):
    body = {"ActionStatus": "OK" if error_code == 0 else "FAIL", "ErrorCode": error_code, "ErrorInfo": info}
    return jsonify(body), http_status


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
        annotate(outcome=outcome)
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
    received_at = utcnow()
    outage = _outage()
    handled: Handled | None = None
    if not outage.is_open():
        try:
            committer, factory = _committer(), get_database().session_factory
            with sqlite_busy_timeout(CALLBACK_LOCK_WAIT_MS):
                handled = handle_body(get_session(), raw_body=raw, meta=meta, now=received_at,
                                      recorder=lambda item: committer.record(item, factory))
        except DATABASE_DOWN as exc:
            _discard_session()
            outage.trip()
            log.error("database unreachable; spooling callbacks", extra={"error": type(exc).__name__})
        except Exception as exc:
            # Valid on its face but not recordable (a bug or a limit we missed): keep it whole in
            # quarantine, where `replay` can take it once fixed, rather than lose it.
            log.exception("callback could not be recorded; quarantined")
            _discard_session()
            reason = f"could not be recorded ({type(exc).__name__}); kept in quarantine for replay"
            quarantine(get_session(), reason=reason, raw_body=raw, meta=meta, now=received_at)
            return done("quarantined", envelope(400, ERR_BAD_REQUEST, reason))
    if handled is None:
        # Nothing is lost: the request goes to the local spool and is drained when the database is back.
        _spool().append(SpooledRequest(received_at, meta, raw))
        metrics.spooled.inc()
        _drainer().wake()
        refused = validate_body(raw, meta.command)
        if isinstance(refused, Refused) and not refused.ignored:
            return done("spooled", envelope(400, ERR_BAD_REQUEST, refused.reason))
        return done("spooled", envelope())
    if handled.outcome == "quarantined":
        log.warning("callback quarantined", extra={"reason": handled.reason, "callback_id": handled.quarantine_id,
                                                   "command": command})
        return done("quarantined", envelope(400, ERR_BAD_REQUEST, handled.reason))
    if handled.outcome == "ignored":
        return done("ignored", envelope())
    record = handled.record
    # One line per callback: its outcome and ids ride on the request's access line.
    annotate(callback_id=record.callback_id, dismissal_id=record.dismissal_id, matched_request=record.matched_request)
    return done(record.outcome, envelope())


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    """Even a bug answers IM in its own envelope (and is logged with its traceback)."""
    log.exception("callback handling failed")
    return envelope(500, ERR_INTERNAL, "internal error; the request was logged")


def _committer():
    return current_app.extensions["receiver.group_commit"]


def _outage():
    return current_app.extensions["receiver.outage"]


def _spool():
    return current_app.extensions["receiver.spool"]


def _drainer():
    return current_app.extensions["receiver.drainer"]


def _discard_session() -> None:
    session = g.pop("db_session", None)
    if session is not None:
        try:
            session.rollback()
            session.close()
        except Exception:  # the connection is gone; nothing more to undo
            pass
