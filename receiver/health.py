"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from receiver import migrate
from receiver.db import get_database, sqlite_busy_timeout

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Report that the process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Report whether the database is reachable and migrated to this code's head (or past it).

    A database migrated by a newer release (a revision this code does not know) is ready: the
    release steps are written so that the previous release still works on the new schema, and
    it serves until its restart (README, Upgrading). Behind head, or never migrated: not ready.
    """
    database = get_database()
    checks: dict[str, object] = {}
    ready = True
    session = database.session_factory()
    try:
        with sqlite_busy_timeout(1000):  # a probe answers fast, even when the database cannot
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current = migrate.current_revision(session.connection())
        head = current_app.extensions["receiver.migration_head"]
        if current == head:
            schema = "at head"
        elif current is None or current in current_app.extensions["receiver.known_revisions"]:
            schema = "behind"
            ready = False
        else:
            schema = "ahead"
        checks["migrations"] = {"current": current, "head": head, "schema": schema}
    except SQLAlchemyError as exc:
        ready = False
        checks["database"] = f"unreachable: {type(exc).__name__}"
    finally:
        session.close()
    spool = current_app.extensions["receiver.spool"]
    checks["spool_depth"] = spool.depth()
    checks["database_outage"] = current_app.extensions["receiver.outage"].is_open() or checks["database"] != "ok"
    return jsonify(status="ready" if ready else "not ready", checks=checks), (200 if ready else 503)
