"""`POST /im/callback`: the URL registered in the IM console; always answers Tencent's envelope.

Every callback IM sends arrives here, so this one URL is served as a plain WSGI application in
front of Flask (`mount`): it skips the request context, hooks and URL matching that the rest of
the service goes through, and parses the request with werkzeug, as Flask would. It keeps what
those hooks give every request: an `X-Request-ID`, one access line (with the callback's outcome
and ids on it), and the HTTP request counter.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl

from flask import Flask
from sqlalchemy.orm import Session
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from receiver.batching import BatchTimeout
from receiver.callbacks import verify
from receiver.callbacks.outage import DATABASE_DOWN
from receiver.callbacks.parsing import Refused, validate_body
from receiver.callbacks.service import Handled, RequestMeta, handle_body, quarantine, unrecordable_reason
from receiver.callbacks.spool import SpooledRequest
from receiver.db import sqlite_busy_timeout
from receiver.logs import request_id_from, request_id_var
from receiver.models import utcnow
from receiver.monitoring import REQUEST_ID_HEADER, finished
from receiver.schemas.tencent import GROUP_DESTROYED

log = logging.getLogger(__name__)

PATH = "/im/callback"
MAX_BODY_BYTES = 1024 * 1024
ERR_BAD_REQUEST = 4000
ERR_METHOD = 4050
ERR_TOO_LARGE = 4130
ERR_INTERNAL = 5000
# Leaves room to spool and answer within the 2 s IM waits for an answer: how long a callback
# waits for SQLite's write lock, and for the batch that is to commit it (`GroupCommitter`).
CALLBACK_LOCK_WAIT_MS = 1200


def envelope_body(error_code: int = 0, info: str = "") -> bytes:
    body = {"ActionStatus": "OK" if error_code == 0 else "FAIL", "ErrorCode": error_code, "ErrorInfo": info}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"  # ASCII, as Flask's jsonify


_OK = envelope_body()


@dataclass
class _Answer:
    status: int
    body: bytes = _OK
    fields: dict[str, Any] = field(default_factory=dict)  # for the access line


def _fail(status: int, error_code: int, info: str, outcome: str) -> _Answer:
    return _Answer(status, envelope_body(error_code, info), {"outcome": outcome})


class _Args:
    """A query string's parameters, read as werkzeug's `request.args` reads them: `get` gives a
    key's first value, `lists` every key (in order of first appearance) with all its values.

    IM's query strings are plain `key=value` pairs: with no `%` and no `+` to decode, splitting
    them gives what `parse_qsl` gives, for a fifth of its cost (≈ 8 → 1.8 µs a callback); any
    other query string goes through `parse_qsl` itself, with werkzeug's error handling.
    """

    __slots__ = ("pairs", "_first")

    def __init__(self, query: str) -> None:
        if "%" in query or "+" in query:
            pairs = parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote")
        else:  # parse_qsl's own rules, without decoding: empty pieces skipped, a bare key is blank
            pairs = [(name, value) for name, _, value in (piece.partition("=") for piece in query.split("&") if piece)]
        self.pairs: list[tuple[str, str]] = pairs
        self._first = dict(reversed(pairs))  # each key's first value (the earliest assignment is the last)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._first.get(key, default)

    def lists(self) -> list[tuple[str, list[str]]]:
        if len(self._first) == len(self.pairs):  # no key repeated: the usual case
            return [(key, [value]) for key, value in self.pairs]
        grouped: dict[str, list[str]] = {}
        for key, value in self.pairs:
            grouped.setdefault(key, []).append(value)
        return list(grouped.items())


class _Request:
    """What the endpoint reads of a request, parsed as werkzeug's `Request` parses it.

    Built with werkzeug's own functions (and `_Args`, read as its `args`), without the Request
    object around them, whose construction (headers view, cached properties) cost as much as
    all of these together (≈ 27 → 15 µs a callback). Invalid UTF-8 in the query string is
    replaced rather than raised (werkzeug raises; gunicorn refuses such a request line before
    it gets here).
    """

    __slots__ = ("environ", "method", "args", "remote_addr", "content_type", "content_length")

    def __init__(self, environ: dict) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.args = _Args(environ.get("QUERY_STRING", "").encode("latin1").decode("utf-8", "replace"))
        self.remote_addr: str | None = environ.get("REMOTE_ADDR")
        self.content_type: str | None = environ.get("CONTENT_TYPE")
        self.content_length = get_content_length(environ)

    @property
    def stream(self):
        return get_input_stream(self.environ)


def _meta(request: _Request) -> RequestMeta:
    args = request.args
    # Sign is a credential derivative: keep it out of the stored query string.
    query = "&".join(f"{k}={v}" for k, vs in args.lists() for v in vs if k != "Sign")
    return RequestMeta(
        query_string=query[:4000],
        sdkappid=verify.query_number(args.get("SdkAppid")),
        command=args.get("CallbackCommand"),
        client_ip=args.get("ClientIP"),
        opt_platform=args.get("OptPlatform"),
        request_time=verify.query_number(args.get("RequestTime")),
        content_type=request.content_type,
        remote_addr=request.remote_addr,
    )


def _read_body(stream, limit: int) -> bytes:
    """Up to `limit` + 1 bytes (enough to tell an oversized body), however the server chunks reads."""
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _SessionOnDemand:
    """A session opened only if one is needed (valid callbacks go to the group committer)."""

    def __init__(self, factory: Callable[[], Session]) -> None:
        self._factory = factory
        self._session: Session | None = None

    def __call__(self) -> Session:
        if self._session is None:
            self._session = self._factory()
        return self._session

    def discard(self) -> None:
        """Roll back and close the session, if one was opened (after a failure, its connection may
        be broken: a new one is opened if asked for again)."""
        session, self._session = self._session, None
        if session is not None:
            try:
                session.rollback()
                session.close()
            except Exception:  # the connection is gone; nothing more to undo
                pass


class CallbackEndpoint:
    """The WSGI application behind `/im/callback` (see the module docstring)."""

    def __init__(self, *, config, database, metrics, committer, outage, spool, drainer) -> None:
        self.config = config
        self.database = database
        self.metrics = metrics
        self.committer = committer
        self.outage = outage
        self.spool = spool
        self.drainer = drainer
        self._statement = database.batch_statement if database.has_batch_statements else None

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        started = time.perf_counter()
        request = _Request(environ)
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        token = request_id_var.set(request_id)
        try:
            if request.method != "POST":
                answer = _fail(405, ERR_METHOD, f"{PATH} takes POST only", "method_not_allowed")
            else:
                command = request.args.get("CallbackCommand")
                try:
                    answer = self._handle(request, command)
                except Exception:
                    # Even a bug answers IM in its own envelope (and is logged with its traceback).
                    log.exception("callback handling failed")
                    answer = _fail(500, ERR_INTERNAL, "internal error; the request was logged", "error")
                self.metrics.callback_handled(command or "", answer.fields["outcome"], time.perf_counter() - started)
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(answer.body))),
                       (REQUEST_ID_HEADER, request_id)]
            if answer.status == 405:
                headers.append(("Allow", "POST"))
            start_response(f"{answer.status} {HTTP_STATUS_CODES[answer.status]}", headers)
            finished(self.metrics, PATH, request.method, PATH, answer.status, started, request.remote_addr,
                     answer.fields)
            return [answer.body]
        finally:
            request_id_var.reset(token)

    def _handle(self, request: _Request, command: str | None) -> _Answer:
        """Verify, validate, store once; the answer and the fields of the access line."""
        config = self.config
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _fail(413, ERR_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes", "too_large")
        args = request.args
        try:
            verify.check_address(request.remote_addr, config.im_callback_allowed_ips)
            verify.check_sdkappid(args.get("SdkAppid"), config.im_sdkappid)
            verify.check_sign(args.get("Sign"), args.get("RequestTime"), config.im_callback_tokens, now=time.time(),
                              max_skew_seconds=config.im_callback_max_skew_seconds)
        except verify.CallbackRejected as rejected:
            log.warning("callback rejected", extra={"reason": rejected.reason, "command": command,
                                                    "remote_addr": request.remote_addr})
            return _fail(rejected.http_status, rejected.error_code, rejected.info, f"rejected_{rejected.reason}")

        if command is not None and command != GROUP_DESTROYED:
            # Never hold up (or veto) a "before" callback we do not handle.
            return _Answer(200, fields={"outcome": "ignored"})

        raw = _read_body(request.stream, MAX_BODY_BYTES)
        if len(raw) > MAX_BODY_BYTES:
            return _fail(413, ERR_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes", "too_large")
        meta = _meta(request)
        received_at = utcnow()
        handled: Handled | None = None
        session = _SessionOnDemand(self.database.session_factory)
        try:
            if not self.outage.is_open():
                try:
                    with sqlite_busy_timeout(CALLBACK_LOCK_WAIT_MS):
                        handled = handle_body(session, raw_body=raw, meta=meta, now=received_at,
                                              recorder=self._record)
                except (*DATABASE_DOWN, BatchTimeout) as exc:
                    # A batch that has not committed in time is as good as an outage: the spool
                    # keeps the callback (should the batch commit it after all, the drain finds
                    # it stored and counts a duplicate).
                    session.discard()
                    self.outage.trip()
                    log.error("database unreachable; spooling callbacks", extra={"error": type(exc).__name__})
                except Exception as exc:
                    # Valid on its face but not recordable (a bug or a limit we missed): keep it whole
                    # in quarantine, where `replay` can take it once fixed, rather than lose it. If
                    # even that fails, the database takes no writes (a read-only primary after a
                    # failover): the spool below keeps it, as for an outage.
                    log.exception("callback could not be recorded; quarantining it")
                    session.discard()
                    reason = unrecordable_reason(exc)
                    try:
                        with sqlite_busy_timeout(CALLBACK_LOCK_WAIT_MS):
                            quarantine(session(), reason=reason, raw_body=raw, meta=meta, now=received_at)
                    except Exception as second:
                        session.discard()
                        log.error("could not quarantine either; spooling the callback",
                                  extra={"error": type(second).__name__})
                    else:
                        return _fail(400, ERR_BAD_REQUEST, reason, "quarantined")
        finally:
            session.discard()
        if handled is None:
            # Nothing is lost: the request goes to the local spool and is drained when the database is back.
            self.spool.append(SpooledRequest(received_at, meta, raw))
            self.metrics.spooled.inc()
            self.drainer.wake()
            refused = validate_body(raw, meta.command)
            if isinstance(refused, Refused) and not refused.ignored:
                return _fail(400, ERR_BAD_REQUEST, refused.reason, "spooled")
            return _Answer(200, fields={"outcome": "spooled"})
        if handled.outcome == "quarantined":
            log.warning("callback quarantined", extra={"reason": handled.reason, "callback_id": handled.quarantine_id,
                                                       "command": command})
            return _fail(400, ERR_BAD_REQUEST, handled.reason, "quarantined")
        if handled.outcome == "ignored":
            return _Answer(200, fields={"outcome": "ignored"})
        record = handled.record
        # One line per callback: its outcome and ids ride on the request's access line.
        return _Answer(200, fields={"outcome": record.outcome, "callback_id": record.callback_id,
                                    "dismissal_id": record.dismissal_id, "matched_request": record.matched_request})

    def _record(self, item):
        return self.committer.record(item, self.database.batch_transaction, self._statement,
                                     timeout=CALLBACK_LOCK_WAIT_MS / 1000)


def mount(app: Flask, endpoint: CallbackEndpoint) -> None:
    """Serve `PATH` with `endpoint`, every other path with the Flask app (test clients included)."""
    flask_app = app.wsgi_app

    def dispatch(environ: dict, start_response) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            return endpoint(environ, start_response)
        return flask_app(environ, start_response)

    app.wsgi_app = dispatch  # type: ignore[method-assign]
