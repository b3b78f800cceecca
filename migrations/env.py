"""Alembic environment: runs migrations on the connection or URL the caller hands over."""

from contextlib import contextmanager

from alembic import context

from receiver import models  # noqa: F401  (registers the tables)
from receiver.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from receiver.config import load_config

        url = load_config().database_url
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


class ForeignKeyViolation(RuntimeError):
    """A migration on SQLite left rows that point at nothing; it was rolled back."""


@contextmanager
def _sqlite_foreign_keys_off(connection):
    """SQLite: foreign keys off while migrating, as SQLite's own procedure for altering a table says.

    Alembic's batch mode recreates a table (copy, DROP, rename); with the keys on, the DROP
    deletes the old table's rows first and ON DELETE CASCADE takes their children with them
    (every member of every callback, for `callbacks`). The pragma is a no-op inside a
    transaction, so it is set on the driver's connection before the migration's begins, and set
    back on afterwards (the app's connections all run with it on).
    """
    if connection.dialect.name != "sqlite" or connection.in_transaction():
        yield False
        return
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield True
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection) -> None:
    """Refuse (roll back) a migration that left a row pointing at nothing: the keys were off."""
    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if dangling:
        tables = sorted({row[0] for row in dangling})
        raise ForeignKeyViolation(f"the migration left {len(dangling)} row(s) breaking a foreign key "
                                  f"in {', '.join(tables)}; rolled back")


def _run(connection) -> None:
    with _sqlite_foreign_keys_off(connection) as keys_off:
        # On SQLite, Alembic commits each migration on its own by default; here they all run in one
        # transaction (SQLite's DDL is transactional), so that the check below can undo them all.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True, transactional_ddl=True if keys_off else None)
        with context.begin_transaction():
            context.run_migrations()
            if keys_off:
                _check_foreign_keys(connection)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
