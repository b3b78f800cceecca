"""Tencent Cloud IM group-dismissal receiver: callbacks in, dismissals out, matched."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from receiver.config import Config, ConfigError, load_config


def create_app(config: Config | None = None, *, database=None, metrics=None) -> Flask:
    """Build the web application (the only place that creates a Flask app)."""
    from receiver import db, migrate
    from receiver.health import bp as health_bp
    from receiver.logs import configure_logging
    from receiver.metrics import Metrics

    config = config or load_config()
    configure_logging(config)
    app = Flask(__name__, instance_relative_config=False)
    app.config["RECEIVER"] = config
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.json.sort_keys = False

    database = database or db.Database(config.database_url)
    db.init_app(app, database)
    app.extensions["receiver.metrics"] = metrics or Metrics()
    app.extensions["receiver.migration_head"] = migrate.head_revision()
    app.extensions["receiver.known_revisions"] = migrate.known_revisions()
    _init_spool(app, config, database)

    from receiver import monitoring
    from receiver.dashboard import bp as dashboard_bp

    monitoring.init_app(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(dashboard_bp)

    from receiver.api import init_api

    init_api(app)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(code=exc.code, status=exc.name, message=exc.description), exc.code

    from receiver.cli import register_cli

    register_cli(app)
    _mount_callbacks(app, config, database)
    return app


def _mount_callbacks(app: Flask, config: Config, database) -> None:
    from receiver.callbacks.endpoint import CallbackEndpoint, mount

    ext = app.extensions
    mount(app, CallbackEndpoint(config=config, database=database, metrics=ext["receiver.metrics"],
                                committer=ext["receiver.group_commit"], outage=ext["receiver.outage"],
                                spool=ext["receiver.spool"], drainer=ext["receiver.drainer"]))


def _init_spool(app: Flask, config: Config, database) -> None:
    from receiver.callbacks.groupcommit import GroupCommitter
    from receiver.callbacks.outage import DATABASE_DOWN, OutageBreaker, SpoolDrainer
    from receiver.callbacks.spool import Spool

    spool = Spool(config.spool_dir)
    try:
        spool.check()
    except OSError as exc:  # found now, not in the middle of a database outage with callbacks to keep
        raise ConfigError(f"SPOOL_DIR {str(config.spool_dir)!r} cannot hold the outage spool: "
                          f"{exc.strerror or type(exc).__name__}") from None
    metrics = app.extensions["receiver.metrics"]
    drainer = SpoolDrainer(spool, database, on_drained=metrics.drained.inc)
    app.extensions["receiver.spool"] = spool
    app.extensions["receiver.outage"] = OutageBreaker()
    app.extensions["receiver.drainer"] = drainer
    app.extensions["receiver.group_commit"] = GroupCommitter(is_outage=lambda exc: isinstance(exc, DATABASE_DOWN))
    if spool.segments():  # left by an earlier process or an outage: drain in the background
        drainer.wake()
