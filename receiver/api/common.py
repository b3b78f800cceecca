"""Helpers shared by the /v1 views: settings, the waiter hub, page bodies, documented errors."""

from __future__ import annotations

import json
from http import HTTPStatus

from flask import current_app
from flask_smorest import Blueprint as SmorestBlueprint, abort
from webargs.flaskparser import FlaskParser

from receiver.config import Config
from receiver.dismissals.service import DismissalRequestError, IdempotencyConflict
from receiver.queries import Page
from receiver.schemas.api import encode_cursor

HUB_EXTENSION = "receiver.api.waiters"


class _Parser(FlaskParser):
    """webargs' parser, with every body json.loads cannot take answered as invalid JSON (400).

    `json.loads` raises RecursionError for arrays nested a few thousand deep and ValueError for
    an integer of more than 4,300 digits; neither is a JSONDecodeError, so webargs let them
    through as a 500.
    """

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except (RecursionError, ValueError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                raise
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise json.JSONDecodeError(reason, "?", 0) from None


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with our request parser."""

    ARGUMENTS_PARSER = _Parser()


def settings() -> Config:
    return current_app.config["RECEIVER"]


def waiter_hub():
    return current_app.extensions[HUB_EXTENSION]


def page_body(page: Page) -> dict:
    return {"items": page.items, "next_cursor": encode_cursor(page.last_id) if page.last_id else None}


def documented_errors(blp: Blueprint, *codes: int):
    """Document error answers (besides 401 and the default) in the operation's OpenAPI entry."""

    def decorate(func):
        for code in (401, *codes):
            func = blp.alt_response(code, response=HTTPStatus(code).name)(func)
        return func

    return decorate


def abort_request_error(exc: DismissalRequestError):
    """Answer 422 for a request the dismissal service refused, naming the field like webargs does."""
    location = "headers" if isinstance(exc, IdempotencyConflict) else "json"
    errors: dict = {}
    node = errors.setdefault(location, {})
    parts = (exc.field or "_schema").split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = [str(exc)]
    abort(422, message=str(exc), errors=errors)
