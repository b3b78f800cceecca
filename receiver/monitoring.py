"""Request ids, one access-log line per request (handlers add their outcome to it), and `GET /metrics`."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from receiver.db import get_database
from receiver.logs import request_id_from, request_id_var
from receiver.metrics import render

log = logging.getLogger("receiver.http")

bp = Blueprint("monitoring", __name__)

REQUEST_ID_HEADER = "X-Request-ID"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Probes and scrapes arrive every few seconds; their access lines would drown the rest.
_QUIET_PATHS = {"/metrics", "/healthz", "/readyz"}


def _begin_request() -> None:
    g.request_started = time.perf_counter()
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.request_id_token = request_id_var.set(g.request_id)


def annotate(**fields) -> None:
    """Add fields to this request's access line (a handler's outcome, the ids it touched)."""
    g.setdefault("log_fields", {}).update(fields)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:  # a response made before our first hook ran
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics = current_app.extensions.get("receiver.metrics")
    if metrics is not None:
        metrics.http_requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
    # The path only: query strings may carry a Sign or a dashboard token.
    level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
    if log.isEnabledFor(level):
        fields = g.get("log_fields") or {}
        outcome = fields.get("outcome")
        log.log(
            level, "%s %s %s" + (" %s" if outcome else ""), request.method, request.path, response.status_code,
            *((outcome,) if outcome else ()),
            extra={"method": request.method, "path": request.path, "status": response.status_code,
                   "duration_ms": round((time.perf_counter() - g.request_started) * 1000, 2),
                   "remote_addr": request.remote_addr, **fields},
        )
    return response


def _end_request(_exc) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id_var.reset(token)


@bp.get("/metrics")
def metrics():
    """Serve every metric in the Prometheus text format (public unless METRICS_PUBLIC=false)."""
    from receiver.api.auth import AuthError, bearer_token, check_token

    config = current_app.config["RECEIVER"]
    if not config.metrics_public:
        try:
            check_token(bearer_token(request.headers.get("Authorization")), config.api_tokens)
        except AuthError as exc:
            response = jsonify(code=401, status="Unauthorized", message=str(exc))
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body = render(current_app.extensions["receiver.metrics"], get_database(), config.prometheus_multiproc_dir)
    return Response(body, content_type=METRICS_CONTENT_TYPE)


def init_app(app: Flask) -> None:
    """Stamp every request with an id (first hook of all, so even refused requests get one)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    app.register_blueprint(bp)
