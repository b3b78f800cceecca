"""Health probes and the guarantee that models and migrations describe the same schema."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from receiver.db import Base


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}


def test_readyz_reports_database_and_migrations(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.json
    checks = resp.json["checks"]
    assert checks["database"] == "ok"
    assert checks["migrations"]["current"] == checks["migrations"]["head"] is not None


def test_readyz_fails_when_the_database_is_unreachable(app_factory, tmp_path):
    from receiver.db import Database

    broken = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    resp = app_factory(broken).test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.json["checks"]["database"].startswith("unreachable")


def test_models_and_migrations_do_not_drift(backend):
    with backend.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_unknown_route_answers_json(client):
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.json["code"] == 404


def test_readyz_stays_ready_on_a_schema_a_newer_release_migrated_but_not_behind_it(backend, app_factory):
    # After the release step, the previous release serves on the new schema until its restart:
    # dropping it from the load balancer then would leave callbacks nowhere to go.
    from sqlalchemy import text

    from receiver.db import Database

    database = Database(backend.url)
    app = app_factory(database)
    head = app.extensions["receiver.migration_head"]
    try:
        for version, status, schema in (("zz_next_release", 200, "ahead"), (None, 503, "behind"),
                                        (head, 200, "at head")):
            with database.engine.begin() as conn:
                conn.execute(text("DELETE FROM alembic_version"))
                if version is not None:
                    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": version})
            resp = app.test_client().get("/readyz")
            assert (resp.status_code, resp.json["checks"]["migrations"]["schema"]) == (status, schema), resp.json
    finally:
        with database.engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
        database.dispose()
