"""`/v1/dismissals` and `/v1/stats`: request dismissals (one or a batch), list and follow them, count them."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import EXCLUDE, RAISE
from werkzeug.exceptions import HTTPException

from receiver import queries
from receiver.api.common import Blueprint, abort_request_error, documented_errors, page_body, settings, waiter_hub
from receiver.api.errors import handle_http_exception
from receiver.api.waiter import await_dismissal
from receiver.db import get_read_session, get_session
from receiver.dismissals.service import DismissalRequestError, request_batch, request_dismissal
from receiver.schemas.api import (
    BatchRequestSchema,
    DismissalItemsSchema,
    DismissalListQuerySchema,
    DismissalPageSchema,
    DismissalRequestSchema,
    DismissalSchema,
    IdempotencyHeaderSchema,
    StatsSchema,
    WaitQuerySchema,
)

blp = Blueprint("dismissals", __name__, url_prefix="/v1", description="Request group dismissals and follow them.")
blp.register_error_handler(HTTPException, handle_http_exception)

_DISMISSAL_ID = {"in": "path", "name": "dismissal_id", "description": "The dismissal's id."}


@blp.route("/dismissals")
class Dismissals(MethodView):
    @blp.arguments(DismissalListQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, DismissalPageSchema)
    @documented_errors(blp)
    def get(self, args):
        """List dismissals, newest first.

        `since`/`until` select by when each record was created: when it was requested (api) or
        when its callback was recorded (external). Pages continue with `cursor=next_cursor`;
        rows created while paging never make a row repeat or go missing.
        """
        page = queries.list_dismissals(
            session=get_read_session(), limit=args["limit"], after=args.get("cursor"), status=args.get("status"),
            source=args.get("source"), group_id=args.get("group_id"), since=args.get("since"), until=args.get("until"),
        )
        return page_body(page)

    @blp.arguments(DismissalRequestSchema)
    @blp.arguments(IdempotencyHeaderSchema, location="headers", unknown=EXCLUDE)
    @blp.response(202, DismissalSchema, description="A new dismissal was queued.")
    @blp.alt_response(200, schema=DismissalSchema, success=True,
                      description="The group's open dismissal, or the earlier answer to the same Idempotency-Key.")
    @documented_errors(blp, 400, 413)
    def post(self, body, headers):
        """Request the dismissal of one group."""
        try:
            result = request_dismissal(
                get_session(), sdkappid=settings().im_sdkappid, group_id=body["group_id"], reason=body["reason"],
                requested_by=body["requested_by"], idempotency_key=headers.get("idempotency_key"),
            )
        except DismissalRequestError as exc:
            abort_request_error(exc)
        return result.dismissal, 202 if result.created else 200


@blp.post("/dismissals/batch")
@blp.arguments(BatchRequestSchema)
@blp.response(202, DismissalItemsSchema)
@documented_errors(blp, 400, 413)
def request_many(body):
    """Request the dismissal of many groups at once (open dismissals are returned as they are)."""
    try:
        results = request_batch(
            get_session(), sdkappid=settings().im_sdkappid, group_ids=body["group_ids"], reason=body["reason"],
            requested_by=body["requested_by"],
        )
    except DismissalRequestError as exc:
        abort_request_error(exc)
    return {"items": [r.dismissal for r in results]}


@blp.get("/dismissals/<string:dismissal_id>", parameters=[_DISMISSAL_ID])
@blp.arguments(WaitQuerySchema, location="query", unknown=RAISE)
@blp.response(200, DismissalSchema)
@documented_errors(blp, 404)
def get_dismissal(args, dismissal_id):
    """Get one dismissal, optionally waiting for a final state.

    With `wait`, the answer comes as soon as the dismissal is confirmed, failed or unconfirmed,
    or after `wait` seconds with its state at that time.
    """
    dismissal = await_dismissal(session=get_read_session(), hub=waiter_hub(), dismissal_id=dismissal_id, wait=args["wait"])
    if dismissal is None:
        abort(404, message=f"no dismissal with id {dismissal_id[:64]!r}")
    return dismissal


@blp.get("/stats")
@blp.response(200, StatsSchema)
@documented_errors(blp)
def stats():
    """Count dismissals by status and source, and give confirmation latency percentiles."""
    return queries.dismissal_stats(session=get_session())
