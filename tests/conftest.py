"""Shared fixtures: every database test runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL.

The schema is built once per backend by the real Alembic migrations. Ordinary tests run inside
one outer transaction and each commit becomes a SAVEPOINT, rolled back at the end; tests that
need real concurrency (threads, processes) use `committed_db`, which cleans its tables after.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import delete, text
from sqlalchemy.orm import sessionmaker
from werkzeug.serving import make_server

from receiver import create_app, migrate
from receiver.config import Config, Secret
from receiver.db import Base, Database, make_engine
from receiver.metrics import Metrics

pytest_plugins = ["tests.fixtures.imsim"]

TEST_SDKAPPID = 1400000001
API_TOKEN = "test-api-token-0123456789"


def _backends() -> list:
    params = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get("TEST_DATABASE_URL"):
        params.append(pytest.param("postgresql", id="postgresql"))
    return params


class Backend:
    """A migrated database for one test session: its URL and a shared engine."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        if name == "sqlite":
            self.url = f"sqlite:///{tmp / 'receiver-test.db'}"
            self.schema = None
        else:
            base = os.environ["TEST_DATABASE_URL"]
            base = base.replace("postgresql://", "postgresql+psycopg://", 1) if base.startswith("postgresql://") else base
            # A schema of our own: concurrent test runs on one database cannot collide.
            self.schema = f"t_{uuid.uuid4().hex[:12]}"
            admin = make_engine(base)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            admin.dispose()
            sep = "&" if "?" in base else "?"
            self.url = f"{base}{sep}options=-csearch_path%3D{self.schema}"
            self._base = base
        migrate.upgrade(self.url)
        self.engine = make_engine(self.url)

    def clean(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))

    def drop(self) -> None:
        self.engine.dispose()
        if self.schema:
            admin = make_engine(self._base)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            admin.dispose()


@pytest.fixture(scope="session", params=_backends())
def backend(request, tmp_path_factory) -> Backend:
    b = Backend(request.param, tmp_path_factory.mktemp(request.param))
    yield b
    b.drop()


def make_config(backend: Backend | None = None, **overrides) -> Config:
    base = dict(
        database_url=backend.url if backend else "sqlite://",
        im_sdkappid=TEST_SDKAPPID,
        api_tokens=(Secret(API_TOKEN),),
        spool_dir=Path(os.environ.get("PYTEST_TMP_SPOOL", "/tmp/receiver-test-spool")),
    )
    base.update(overrides)
    return Config(**base)


@pytest.fixture
def db(backend) -> Database:
    """A Database whose every commit is a SAVEPOINT inside one transaction rolled back after the test."""
    conn = backend.engine.connect()
    outer = conn.begin()
    factory = sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield Database(backend.url, engine=backend.engine, session_factory=factory)
    outer.rollback()
    conn.close()


@pytest.fixture
def committed_db(backend) -> Database:
    """A Database with real commits and its own pool, for tests of concurrency; tables cleaned after."""
    database = Database(backend.url)
    yield database
    database.dispose()
    backend.clean()


@pytest.fixture
def config(backend, tmp_path) -> Config:
    return make_config(backend, spool_dir=tmp_path / "spool")


@pytest.fixture
def app_factory(tmp_path):
    """Build an app on a given Database with config overrides."""

    def build(database: Database, **overrides):
        cfg = make_config(None, database_url=database.url, spool_dir=tmp_path / "spool", **overrides)
        return create_app(cfg, database=database, metrics=Metrics())

    return build


@pytest.fixture
def app(app_factory, db):
    return app_factory(db)


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    """A real HTTP server on loopback serving an app in a background thread."""

    def __init__(self, app, threaded: bool = False) -> None:
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=threaded)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.http = requests.Session()

    def stop(self) -> None:
        self.http.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def live_server_factory():
    servers: list[LiveServer] = []

    def start(app, threaded: bool = False) -> LiveServer:
        server = LiveServer(app, threaded=threaded)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live(app, live_server_factory) -> LiveServer:
    """The SAVEPOINT-isolated app behind a real (single-threaded) HTTP server."""
    return live_server_factory(app)
