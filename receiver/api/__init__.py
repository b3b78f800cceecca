"""The /v1 API for internal services (flask-smorest): queries, dismissal requests, OpenAPI."""

from __future__ import annotations

from importlib import metadata

from flask import Flask, current_app, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RoutingException

from receiver.api.auth import AuthError, bearer_token, check_token
from receiver.textsafety import UNSTORABLE_MESSAGE, is_storable
from receiver.api.common import HUB_EXTENSION
from receiver.api.errors import error_response, handle_http_exception
from receiver.api.waiter import WaiterHub
from receiver.db import get_database
from receiver.schemas.api import ErrorSchema, Time

PREFIX = "/v1"
DIST_NAME = "im-dismissal-receiver"
# The docs page is served by us; its scripts come from this CDN, loaded by the reader's browser.
SWAGGER_UI_CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"


class ReceiverApi(Api):
    """flask-smorest's Api, documenting our error shape."""

    ERROR_SCHEMA = ErrorSchema


def _project() -> tuple[str, str, str]:
    try:
        meta = metadata.metadata(DIST_NAME)
        return meta["Name"], meta["Version"], meta.get("Summary") or ""
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return DIST_NAME, "0.0.0", ""


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _is_docs_path(path: str) -> bool:
    return path == f"{PREFIX}/openapi.json" or path == f"{PREFIX}/docs" or path.startswith(f"{PREFIX}/docs/")


def _guard_v1():
    """Authenticate every /v1 request, and answer /v1 routing errors in the /v1 error shape."""
    if not is_api_path(request.path):
        return None
    presented = bearer_token(request.headers.get("Authorization"))
    if presented is None and request.method == "GET" and _is_docs_path(request.path):
        # A browser signed in to the dashboard may read the docs (its cookie is HttpOnly and
        # SameSite=Strict); every other /v1 call needs the header.
        from receiver.dashboard import COOKIE

        presented = request.cookies.get(COOKIE)
    try:
        check_token(presented, current_app.config["RECEIVER"].api_tokens)
    except AuthError as exc:
        return error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="v1"'})
    if not is_storable(request.path) or not all(is_storable(k) and is_storable(v) for k, v in request.args.items(multi=True)):
        return error_response(422, f"path and query parameters {UNSTORABLE_MESSAGE}")
    exc = request.routing_exception
    if isinstance(exc, HTTPException) and not isinstance(exc, RoutingException):
        # 404 and 405 arise before any blueprint is chosen, so its error handler would not see them.
        return handle_http_exception(exc)
    return None


def init_api(app: Flask) -> None:
    """Register the /v1 API on the app: auth, error shape, endpoints and the OpenAPI document."""
    from receiver.api import callbacks, dismissals, groups

    name, version, summary = _project()
    app.config.update(
        API_TITLE=name,
        API_VERSION=version,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_CDN,
        OPENAPI_SWAGGER_UI_CONFIG={"persistAuthorization": True},
        API_SPEC_OPTIONS={
            "info": {
                "description": (
                    f"{summary}. Every request, this document included, needs "
                    "`Authorization: Bearer <token>` with one of the API_TOKENS. Times are RFC 3339 UTC."
                ),
            },
            "security": [{"bearerAuth": []}],
            "servers": [{"url": "/"}],
        },
    )
    api = ReceiverApi(app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.register_field(Time, "string", "date-time")
    app.before_request(_guard_v1)
    for module in (dismissals, groups, callbacks):
        api.register_blueprint(module.blp)
    app.extensions[HUB_EXTENSION] = WaiterHub(get_database(app).session_factory)
