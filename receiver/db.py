"""Engine, sessions and the declarative base; one session per web request, `session_scope` elsewhere."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from flask import Flask, current_app, g
from sqlalchemy import Connection, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(engine_or_url) -> bool:
    url = getattr(engine_or_url, "url", engine_or_url)
    return str(url).startswith("sqlite")


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and immediate write transactions.

    Its errors never carry the statement's parameters (`hide_parameters`): they hold callback
    bodies, member accounts and IM's answers, and a logged traceback would copy them into logs.
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and ":memory:" not in url:
            Path(url[len("sqlite:///"):].split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # An unreachable server must fail fast: callbacks fall back to the spool (IM waits 2 s at most).
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("connect_timeout", 1)
    # An open connection to a server cut off by the network must fail too, not hang its thread:
    # data unacknowledged for 5 s, or 11 s of silence (keepalives), and libpq drops it.
    for name, value in (("keepalives", 1), ("keepalives_idle", 5), ("keepalives_interval", 2),
                        ("keepalives_count", 3), ("tcp_user_timeout", 5000)):
        connect_args.setdefault(name, value)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling cannot do SAVEPOINTs and upgrades read locks to write
    # locks lazily (SQLITE_BUSY that busy_timeout cannot wait out). We take over: autocommit at
    # the driver, and an explicit BEGIN IMMEDIATE so every transaction queues for the write lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, _record, _proxy):
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(_sqlite_busy_ms.get())}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# How long a SQLite connection waits for the write lock. Writers hold it for milliseconds, but a
# loaded machine can stretch that; the callback path lowers it (`sqlite_busy_timeout`) so that it
# can still fall back to the spool inside IM's 2 s budget.
_sqlite_busy_ms: ContextVar[int] = ContextVar("sqlite_busy_ms", default=15000)


class sqlite_busy_timeout:  # noqa: N801 - used as a function-style context manager
    """Connections checked out inside this block wait at most `milliseconds` for SQLite's lock.

    A class rather than a generator-based context manager: every callback passes through one,
    and a generator costs several times as much to make, enter and leave.
    """

    __slots__ = ("milliseconds", "_token")

    def __init__(self, milliseconds: int) -> None:
        self.milliseconds = milliseconds

    def __enter__(self) -> None:
        self._token = _sqlite_busy_ms.set(self.milliseconds)

    def __exit__(self, *exc) -> None:
        _sqlite_busy_ms.reset(self._token)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


class Database:
    """The engine and session factory an app (or worker) uses."""

    def __init__(self, url: str, *, engine: Engine | None = None, session_factory=None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.session_factory = session_factory or make_session_factory(self.engine)
        self._session_factory_given = session_factory is not None
        # Sessions for requests that only read, one statement at a time (`get_read_session`): on
        # PostgreSQL in autocommit, so each read is its one round trip, without the BEGIN and
        # ROLLBACK around it (≈ 350 µs of a /v1 read here). SQLite takes its locks its own way
        # (`_configure_sqlite`): the usual sessions there.
        self.read_session_factory = self.session_factory
        if session_factory is None and not is_sqlite(self.engine):
            self.read_session_factory = sessionmaker(
                bind=self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
        # The callback group committer's transactions, on a pool of their own that does not
        # ping before each use: a ping is a round trip per batch on the busiest path. A
        # connection the server has closed meanwhile fails its batch, which the committer runs
        # again once on a new connection (GroupCommitter). SQLite has no server to lose.
        self._batch_engine: Engine | None = None
        self._batch_connections: list[Connection] = []
        self._statement_connections: list[Connection] = []
        if session_factory is None and not is_sqlite(self.engine):
            self._batch_engine = make_engine(url, pool_pre_ping=False, pool_size=2, max_overflow=4)

    @property
    def has_batch_statements(self) -> bool:
        """Whether `batch_statement` is available: PostgreSQL, on a pool of our own (not the tests'
        outer-transaction sessions)."""
        return self._batch_engine is not None

    @contextlib.contextmanager
    def batch_transaction(self) -> Iterator[Connection]:
        """A connection in a new transaction, committed when the block ends, rolled back on an error.

        For the callback group committer: a bare Connection costs less than a Session around
        it, on a path that runs once per batch. On PostgreSQL the Connection itself is kept
        between batches (checked out from the pool, closed and opened for every batch, it cost
        about 30 µs of a batch of one): one taken from an idle list, back on it when its
        transaction has ended, closed instead when it was invalidated (a lost server) or could
        not be rolled back. With a session factory of its own (the tests' sessions, inside an
        outer transaction), a session's connection, committed through it.
        """
        if self._session_factory_given:
            with self.session_scope() as session:
                yield session.connection()
        elif self._batch_engine is None:
            with self.engine.begin() as conn:
                yield conn
        else:
            conn = self._take(self._batch_connections)
            try:
                with conn.begin():
                    yield conn
            finally:
                self._give_back(self._batch_connections, conn)

    @contextlib.contextmanager
    def batch_statement(self) -> Iterator[Connection]:
        """A connection in autocommit, where each statement is a transaction of its own.

        For the group committer's one-statement path (`store_unmatched`): no BEGIN and no
        COMMIT round trips around it. PostgreSQL only (`has_batch_statements`). Kept between
        batches like `batch_transaction`'s, on an idle list of their own: a connection keeps its
        mode for its life, instead of switching it (psycopg's switch is itself a call that can
        fail on a lost connection).
        """
        if self._batch_engine is None:
            raise RuntimeError("batch statements need PostgreSQL and the batch pool (has_batch_statements)")
        conn = self._take(self._statement_connections, autocommit=True)
        try:
            yield conn
        finally:
            self._give_back(self._statement_connections, conn)

    def _take(self, idle: list[Connection], *, autocommit: bool = False) -> Connection:
        try:
            return idle.pop()  # atomic: two callers never share one
        except IndexError:
            conn = self._batch_engine.connect()
            if autocommit:  # set on the driver's connection now; reset by the pool when it is closed
                conn.execution_options(isolation_level="AUTOCOMMIT")
            return conn

    @staticmethod
    def _give_back(idle: list[Connection], conn: Connection) -> None:
        """Back on the idle list, unless lost (invalidated) or left in a transaction it could not end."""
        if conn.invalidated or conn.in_transaction():
            conn.close()
        else:
            idle.append(conn)

    @contextlib.contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        session = self.session_factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._batch_engine is not None:
            for idle in (self._batch_connections, self._statement_connections):
                while idle:
                    with contextlib.suppress(Exception):  # a lost server's connection may not close cleanly
                        idle.pop().close()
            self._batch_engine.dispose()


def init_app(app: Flask, database: Database) -> None:
    app.extensions["receiver.db"] = database

    @app.teardown_appcontext
    def _close_session(_exc):
        for name in ("db_session", "db_read_session"):
            session = g.pop(name, None)
            if session is not None:
                session.close()


def get_database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions["receiver.db"]


def get_session() -> Session:
    """The session of the current request (created on first use, closed on teardown)."""
    if "db_session" not in g:
        g.db_session = get_database().session_factory()
    return g.db_session


def get_read_session() -> Session:
    """A session of the current request for reads whose every statement stands on its own: on
    PostgreSQL each statement is its own transaction (autocommit), so views that must agree
    across statements (a group and its members) take `get_session` instead. Writes go through
    `get_session` too."""
    database = get_database()
    if database.read_session_factory is database.session_factory:  # SQLite: one session a request
        return get_session()
    if "db_read_session" not in g:
        g.db_read_session = database.read_session_factory()
    return g.db_read_session
