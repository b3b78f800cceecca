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
