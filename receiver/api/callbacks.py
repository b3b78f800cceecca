"""`/v1/callbacks`: the stored IM callbacks, quarantined requests included, with their reasons."""

from __future__ import annotations

from marshmallow import RAISE
from werkzeug.exceptions import HTTPException

from receiver import queries
from receiver.api.common import Blueprint, documented_errors, page_body
from receiver.api.errors import handle_http_exception
from receiver.db import get_read_session
from receiver.schemas.api import RAW_BODY_PREVIEW_BYTES, CallbackListQuerySchema, CallbackPageSchema

# Named apart from the `callbacks` blueprint that serves /im/callback.
blp = Blueprint("stored-callbacks", __name__, url_prefix="/v1", description="IM callbacks as received, quarantine included.")
blp.register_error_handler(HTTPException, handle_http_exception)


@blp.get("/callbacks")
@blp.arguments(CallbackListQuerySchema, location="query", unknown=RAISE)
@blp.response(200, CallbackPageSchema)
@documented_errors(blp)
def list_callbacks(args):
    """List stored callbacks, accepted and quarantined, newest first.

    `since`/`until` select by when the callback was stored: when it was received, or, for one
    drained from the outage spool or replayed from quarantine, when that stored it (its
    `received_at` keeps the original time).
    """
    page = queries.list_callbacks(
        session=get_read_session(), limit=args["limit"], after=args.get("cursor"), preview_bytes=RAW_BODY_PREVIEW_BYTES,
        command=args.get("command"), group_id=args.get("group_id"), state=args.get("state"), since=args.get("since"),
        until=args.get("until"),
    )
    return page_body(page)

