"""`GET /`: a small read-only dashboard for operators, behind the /v1 API tokens."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, make_response, redirect, render_template, request

from receiver.api.auth import bearer_token, token_is_valid
from receiver.db import get_session
from receiver.ops.overview import overview

bp = Blueprint("dashboard", __name__, template_folder="templates")

COOKIE = "receiver_token"
COOKIE_MAX_AGE = 12 * 3600
# Inline styles and SVG only; nothing is loaded from anywhere, no script runs.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


def _tokens():
    return current_app.config["RECEIVER"].api_tokens


def _private(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _login(status: int, error: str | None = None) -> Response:
    configured = bool(_tokens())
    return _private(make_response(render_template("dashboard/login.html", error=error, configured=configured), status))


def _signed_in_redirect(token: str) -> Response:
    response = redirect("/", code=303)
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, path="/", httponly=True, samesite="Strict",
                        secure=request.is_secure)
    return _private(response)


@bp.get("/")
def index():
    """Show dismissal counts, the latest 50 dismissals and confirmation latency (token required)."""
    url_token = request.args.get("token")
    if url_token is not None:
        # Move the token out of the URL (history, logs, Referer) into an HttpOnly cookie.
        if token_is_valid(url_token, _tokens()):
            return _signed_in_redirect(url_token)
        return _login(401, "That token is not valid.")
    presented = bearer_token(request.headers.get("Authorization")) or request.cookies.get(COOKIE)
    if not token_is_valid(presented, _tokens()):
        return _login(401)
    view = overview(session=get_session(), limit=50)
    return _private(make_response(render_template("dashboard/index.html", view=view)))


@bp.post("/")
def sign_in():
    """Check a token from the sign-in form and keep it in a cookie."""
    token = (request.form.get("token") or "").strip()
    if not token_is_valid(token, _tokens()):
        return _login(401, "That token is not valid.")
    return _signed_in_redirect(token)


@bp.post("/logout")
def sign_out():
    """Forget the dashboard cookie."""
    response = redirect("/", code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
    return _private(response)
