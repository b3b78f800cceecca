"""Request ids, one access-log line per request, and `GET /metrics`.

Flask requests get theirs from the hooks below; `/im/callback`, served outside Flask, calls
`finished` itself and adds its outcome and ids to the line.
"""

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


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:  # a response made before our first hook ran
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    finished(current_app.extensions.get("receiver.metrics"), endpoint, request.method, request.path,
             response.status_code, g.request_started, request.remote_addr, None)
    return response


def finished(metrics, endpoint: str, method: str, path: str, status: int, started: float,
             remote_addr: str | None, fields: dict | None) -> None:
    """Count a served request and write its access line (the one line a request gets)."""
    if metrics is not None:
        metrics.http_request(endpoint, status)
    # The path only: query strings may carry a Sign or a dashboard token.
    level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
    if log.isEnabledFor(level):
        fields = fields or {}
        outcome = fields.get("outcome")
        log.log(
            level, "%s %s %s" + (" %s" if outcome else ""), method, path, status, *((outcome,) if outcome else ()),
            extra={"method": method, "path": path, "status": status,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                   "remote_addr": remote_addr, **fields},
        )


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
