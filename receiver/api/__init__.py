"""The /v1 API for internal services (flask-smorest): queries, dismissal requests, OpenAPI."""

from __future__ import annotations

from flask import Flask


def init_api(app: Flask) -> None:
    """Register the /v1 API on the app."""
