"""`/v1/groups` and `/v1/members`: what happened to a group, and which dismissals touched an account."""

from __future__ import annotations

from flask_smorest import abort
from marshmallow import RAISE
from werkzeug.exceptions import HTTPException

from receiver import queries
from receiver.api.common import Blueprint, documented_errors, page_body
from receiver.api.errors import handle_http_exception
from receiver.db import get_read_session, get_session
from receiver.schemas.api import DismissalPageSchema, GroupSchema, PageQuerySchema

blp = Blueprint("groups", __name__, url_prefix="/v1", description="Dismissals by group and by member account.")
blp.register_error_handler(HTTPException, handle_http_exception)

_GROUP_ID = {"in": "path", "name": "group_id", "description": "The IM group ID (URL-encoded: @TGS#... is %40TGS%23...)."}
_ACCOUNT = {"in": "path", "name": "account", "description": "The member's IM account (UserID)."}


@blp.get("/groups/<path:group_id>", parameters=[_GROUP_ID])  # IM group IDs may hold "/"
@blp.response(200, GroupSchema)
@documented_errors(blp, 404)
def get_group(group_id):
    """Get a group's dismissals and its members as of its latest dismissal callback."""
    view = queries.group_view(session=get_session(), group_id=group_id)
    if view is None:
        abort(404, message="no dismissal or dismissal callback is known for this group")
    return view


@blp.get("/members/<path:account>/dismissals", parameters=[_ACCOUNT])
@blp.arguments(PageQuerySchema, location="query", unknown=RAISE)
@blp.response(200, DismissalPageSchema)
@documented_errors(blp)
def member_dismissals(args, account):
    """List dismissals of groups the account was a member of when they were dismissed, newest first."""
    page = queries.member_dismissals(session=get_read_session(), account=account, limit=args["limit"], after=args.get("cursor"))
    return page_body(page)
