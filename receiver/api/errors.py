"""The one error shape of /v1, `{code, status, message, errors?}`, for every HTTP error."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException

_DEFAULT_MESSAGES = {
    400: "The request body is not valid JSON.",
    422: "The request is not valid: see errors.",
}


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def error_response(code: int, message: str, errors: dict | None = None, headers: Any = None) -> Response:
    """A JSON error answer in the /v1 shape."""
    body: dict[str, Any] = {"code": code, "status": _phrase(code), "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = code
    for name, value in (headers.items() if isinstance(headers, dict) else headers or ()):
        response.headers[name] = value
    return response


def handle_http_exception(exc: HTTPException) -> Response:
    """Render any HTTP error (ours, webargs' validation errors, werkzeug's) in the /v1 shape."""
    code = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message") or (_DEFAULT_MESSAGES.get(code) if errors else None) or exc.description
    if code >= 500:
        message = "The server could not answer this request; it has been logged."
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    headers.extend((data.get("headers") or {}).items())
    return error_response(code, message or _phrase(code), errors, headers)
