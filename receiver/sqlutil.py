"""Small dialect-aware SQL helpers: INSERT … ON CONFLICT DO NOTHING, and bulk inserts, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import orjson
from sqlalchemy import Connection, LargeBinary, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_log = logging.getLogger(__name__)


def insert_ignoring_conflicts(session: Session, model, *, index_elements=None, index_where=None):
    """An INSERT for `model` that silently skips rows violating a unique constraint."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(model)
    elif dialect == "sqlite":
        stmt = sqlite.insert(model)
    else:  # pragma: no cover - only the two supported backends
        raise NotImplementedError(f"unsupported database dialect {dialect!r}")
    return stmt.on_conflict_do_nothing(index_elements=index_elements, index_where=index_where)


# -- bulk inserts on the driver's cursor ------------------------------------------------------------
#
# The hot paths (a batch of callbacks, a batch of dismissals) insert many rows at once. Through
# SQLAlchemy's executemany/insertmanyvalues machinery every batch size renders a new multi-row
# statement, which the driver then parses again, and every value passes through several layers;
# that was about half of a callback's CPU. Here one short statement per (table, columns) is built
# once. On PostgreSQL the rows travel as one JSON document, `INSERT … SELECT … FROM
# json_populate_recordset(NULL::table, %s)`: a fixed text that psycopg caches and prepares, one
# parameter encoded by orjson, and each value converted by the column type's
# own input function (so a string too long for its column is refused, never truncated). On
# SQLite, a plain executemany (or, when rows must be returned, multi-row VALUES). Values first
# go through each column type's bind processor, so what is stored is what the ORM would store.
#
# On PostgreSQL these statements run on the DBAPI cursor itself (`_on_the_driver`): SQLAlchemy's
# execution context and result metadata, rebuilt for every uncompiled statement, cost as much
# as the rest of a batch of one (bench/cost: 2,257k → 1,984k instructions per callback).

_SQLITE_MAX_VARIABLES = 32766


def _on_the_driver(connection: Connection, sql: str, params: tuple, *, fetch: bool) -> list[tuple]:
    """Run `sql` on the connection's DBAPI cursor, in its transaction; its rows if `fetch`.

    A driver error comes out as SQLAlchemy's own wrapper would have it (an OperationalError is
    sqlalchemy.exc.OperationalError, so an outage is recognised; the parameters, which hold
    callback bodies, are not in its message). A lost connection is invalidated, and the pool is
    replaced (`Engine.dispose`): its other connections, of the same age, are likely dead too,
    which SQLAlchemy's own handling of a disconnect assumes as well.
    """
    dialect = connection.dialect
    dbapi_connection = connection.connection
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall() if fetch else []
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, dbapi_connection.dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
            connection.engine.dispose()  # closes the idle ones; checked-out ones close when returned
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
                                  connection_invalidated=lost, dialect=dialect) from exc
    finally:
        with contextlib.suppress(Exception):  # a cursor of a lost connection may not close cleanly
            cursor.close()


@dataclass(frozen=True)
class _InsertPlan:
    head: str  # INSERT INTO t (…) and VALUES / the json_populate_recordset select
    row: str  # SQLite: one row's placeholders; empty on PostgreSQL
    tail: str  # ON CONFLICT … / RETURNING …
    processors: tuple  # per column: the type's bind processor, or None

    def sql(self, rows: int = 1) -> str:
        """The statement for `rows` rows (only SQLite's multi-row VALUES depends on the count).

        Every piece comes from `_plan`: the Table's own names quoted by the dialect's identifier
        preparer, and placeholders. No value ever enters the text.
        """
        return f"{self.head}{', '.join([self.row] * rows)}{self.tail}"


# Statements by the shape of the call (dialect, tables, columns, conditions): each built once,
# then handed to the driver as the same string object, which psycopg looks up in its query and
# prepared-statement caches (a string built anew is hashed anew). Built for every batch, the
# texts of the multi-table statements cost a callback stored alone about 130k instructions of
# 1,131k (bench/cost).
_statements: dict[tuple, Any] = {}
_statements_lock = threading.Lock()


def _statement(shape: tuple, build: Callable[[], Any]) -> Any:
    made = _statements.get(shape)
    if made is None:
        made = build()
        with _statements_lock:
            _statements[shape] = made
    return made


def _plan(dialect, table: Table, columns: tuple[str, ...], conflict: bool | str,
          returning: tuple[str, ...]) -> _InsertPlan:
    return _statement(("plan", dialect.name, table.name, columns, conflict, returning),
                      lambda: _build_plan(dialect, table, columns, conflict, returning))


def _build_plan(dialect, table: Table, columns: tuple[str, ...], conflict: bool | str,
                returning: tuple[str, ...]) -> _InsertPlan:
    quote = dialect.identifier_preparer.quote
    table_name = dialect.identifier_preparer.format_table(table)
    names = ", ".join(quote(c) for c in columns)
    if dialect.name == "postgresql":
        head = f"INSERT INTO {table_name} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table_name}, %s)"
        row = ""
    elif dialect.name == "sqlite":
        head = f"INSERT INTO {table_name} ({names}) VALUES "
        row = "(" + ", ".join("?" for _ in columns) + ")"
    else:  # pragma: no cover - only the two supported backends
        raise NotImplementedError(f"unsupported database dialect {dialect.name!r}")
    tail = ""
    if conflict is True:
        tail = " ON CONFLICT DO NOTHING"
    elif conflict:
        tail = " ON CONFLICT (" + quote(conflict) + ") DO NOTHING"
    if returning:
        tail += " RETURNING " + ", ".join(quote(c) for c in returning)
    return _InsertPlan(head, row, tail, tuple(
        _json_processor(table.c[c].type, dialect) if row == "" else
        table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns))


def _json_processor(type_, dialect):
    """PostgreSQL's JSON documents: what turns a column's value into its JSON spelling, if anything.

    A type may bring its own (`json_processor`, as `models.UTCDateTime` does: a check, where its
    bind processor also converts, leaving orjson to spell the value). Bytes are spelled by
    `_json_value` for bytea's input, not wrapped for the driver. Anything else goes through the type's own bind
    processor, so what is stored is what the ORM would store.
    """
    if isinstance(type_, LargeBinary):
        return None
    own = getattr(type_, "json_processor", None)
    if own is not None:
        return own()
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _json_value(value: Any) -> Any:
    """The JSON spelling of a value orjson does not spell, for PostgreSQL's input function."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    raise TypeError(f"cannot store {type(value).__name__} through a JSON document")


def _document(plan: _InsertPlan, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> str:
    """PostgreSQL: `rows` (plain dicts) as one JSON document for json_populate_recordset.

    A key that is not one of the statement's columns is ignored by the SELECT list. Encoded by
    orjson, datetimes included (`isoformat` took 1.5 µs each): a batch of six callbacks' rows,
    callbacks, dismissals and members, 140 → 68 µs with the processors here. Bytes are spelled
    by `_json_value`; a naive datetime is refused by its column's processor
    (`models.UTCDateTime`, the type of every datetime column).
    """
    processed = [(c, p) for c, p in zip(columns, plan.processors) if p is not None]
    if processed:
        rows = [dict(row) for row in rows]  # the caller's dicts stay as they were
        for row in rows:
            for column, process in processed:
                row[column] = process(row[column])
    return orjson.dumps(rows, default=_json_value).decode()


def bulk_insert(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                skip_conflicts: bool | str = False, returning: Sequence[str] = ()) -> list[tuple]:
    """Insert `rows` (dicts with the same keys) in the connection's transaction; return `returning`.

    `skip_conflicts`: True skips rows that would violate any unique index (ON CONFLICT DO
    NOTHING); a column name, only those violating that column's. Skipped rows return nothing.
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    plan = _plan(connection.dialect, table, columns, skip_conflicts, tuple(returning))
    # No compiling. On SQLite through exec_driver_sql; either way the driver's errors arrive as
    # SQLAlchemy's (so an outage is recognised) and a dead connection is invalidated in the pool.
    if not plan.row:  # PostgreSQL: the rows as one JSON document, keyed by column
        return _on_the_driver(connection, plan.sql(), (_document(plan, columns, rows),), fetch=bool(returning))
    values = [[row[c] for c in columns] for row in rows]
    for i, process in enumerate(plan.processors):
        if process is not None:
            for v in values:
                v[i] = process(v[i])
    if not returning:
        connection.exec_driver_sql(plan.sql(), [tuple(v) for v in values])
        return []
    out: list[tuple] = []
    per = max(1, _SQLITE_MAX_VARIABLES // len(columns))
    for start in range(0, len(values), per):
        chunk = values[start:start + per]
        result = connection.exec_driver_sql(plan.sql(len(chunk)), tuple(v for row in chunk for v in row))
        out += [tuple(r) for r in result]
    return out


def bulk_insert_and_query(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                          skip_conflicts: bool | str, returning: Sequence[str], query: str, params: tuple,
                          query_width: int) -> tuple[list[tuple], list[tuple]]:
    """`bulk_insert`, then a query: (rows the INSERT returned, rows the query returned).

    On PostgreSQL both are one statement, one round trip: the INSERT and the query are CTEs of
    a UNION ALL, each row tagged with the side it comes from, the other side's columns NULL.
    The INSERT runs first (the UNION ALL reads its rows first), so the locks a locking query
    takes come after the INSERT's, as they would in two statements. Being one statement, the
    query does not see the rows just inserted: it must not read `table`. `query` is a fixed
    text in the dialect's parameter style, for `params`; `query_width`, the number of columns
    it selects. On SQLite, two statements (and the query does see them).
    """
    returning = tuple(returning)
    if connection.dialect.name != "postgresql" or not rows:
        inserted = bulk_insert(connection, table, rows, skip_conflicts=skip_conflicts, returning=returning)
        return inserted, [tuple(r) for r in connection.exec_driver_sql(query, params)]
    columns = tuple(rows[0])

    def build() -> tuple[str, _InsertPlan]:
        plan = _plan(connection.dialect, table, columns, skip_conflicts, returning)
        quote = connection.dialect.identifier_preparer.quote
        inserted_side = ", ".join(quote(c) for c in returning) + ", NULL" * query_width
        queried_side = "NULL, " * len(returning) + "q.*"
        # Only `_plan`'s text and the caller's fixed query are joined here; every value is a parameter.
        sides = f"SELECT 0, {inserted_side} FROM i UNION ALL SELECT 1, {queried_side} FROM q"
        return f"WITH i AS ({plan.sql()}), q AS ({query}) {sides}", plan

    sql, plan = _statement(("and_query", table, columns, skip_conflicts, returning, query, query_width), build)
    result = _on_the_driver(connection, sql, (_document(plan, columns, rows), *params), fetch=True)
    inserted, queried = [], []
    width = len(returning)
    for row in result:
        if row[0] == 0:
            inserted.append(tuple(row[1:1 + width]))
        else:
            queried.append(tuple(row[1 + width:]))
    return inserted, queried


def bulk_insert_linked(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                       skip_conflicts: str, only_if: str, key: str,
                       dependents: Sequence[tuple[Table, Sequence[Mapping[str, Any]], str]]) -> list[Any]:
    """PostgreSQL: insert `rows`, and the dependents' rows that point at them, in one statement.

    A row of `table` is skipped if it conflicts on the `skip_conflicts` column or if `only_if`
    is false for it: a fixed SQL condition in which `batch` names the row (`batch.group_id`).
    `dependents` is a chain: each entry (table, rows, link) inserts those of its rows whose
    `link` column holds the key of a row inserted just before it in the chain (for the first
    entry, the `key` of a row of `table`; for the others, the primary key of the entry before);
    the rest are dropped with the row they point at. Returns the inserted rows' `key`s.

    Being one statement, it is all or nothing; on a connection in autocommit it is a whole
    transaction in one round trip (no BEGIN, no COMMIT of its own). `only_if` reads the
    database as of the statement's start, without locks. Foreign keys between these rows are
    checked at the statement's end, as in `bulk_insert_chain`. Each table's rows have the same
    keys (`bulk_insert`'s rule). The statement is `_plan`'s INSERTs, each filtered.
    """
    if connection.dialect.name != "postgresql":  # pragma: no cover - the caller checks the backend
        raise NotImplementedError("bulk_insert_linked is for PostgreSQL")
    if not rows:
        return []
    shape = (table, tuple(rows[0]), skip_conflicts, only_if, key,
             tuple((dependent, tuple(dependent_rows[0]) if dependent_rows else None, link)
                   for dependent, dependent_rows, link in dependents))
    sql, plans = _statement(("linked", *shape), lambda: _linked_plan(connection.dialect, *shape))
    documents = tuple(_document(plan, columns, rows_)
                      for (plan, columns), rows_ in zip(plans, [rows, *(d[1] for d in dependents)]))
    return [row[0] for row in _on_the_driver(connection, sql, documents, fetch=True)]


def _linked_plan(dialect, table: Table, columns: tuple[str, ...], skip_conflicts: str, only_if: str, key: str,
                 dependents: tuple) -> tuple[str, tuple]:
    """The statement of `bulk_insert_linked`, and each document's (plan, columns), in order."""
    quote = dialect.identifier_preparer.quote
    plan = _plan(dialect, table, columns, skip_conflicts, (key,))
    # Only `_plan`'s texts (quoted Table identifiers, %s placeholders), quoted column names and
    # the caller's fixed condition are joined here; every row travels in a bound document.
    ctes = [f"i AS ({plan.head} AS batch WHERE {only_if}{plan.tail})"]
    plans = [(plan, columns)]
    parent, parent_key = "i", key
    for n, (dependent, dependent_columns, link) in enumerate(dependents, 1):
        dependent_columns = dependent_columns or tuple(dependent.c.keys())
        last = n == len(dependents)
        own_key = () if last else tuple(c.name for c in dependent.primary_key.columns)
        dependent_plan = _plan(dialect, dependent, dependent_columns, False, own_key)
        within = f"SELECT {quote(parent_key)} FROM {parent}"  # the keys the chain's previous INSERT returned
        ctes.append(f"d{n} AS ({dependent_plan.head} AS r WHERE r.{quote(link)} IN ({within}){dependent_plan.tail})")
        plans.append((dependent_plan, dependent_columns))
        if not last:
            (parent_key,) = own_key
            parent = f"d{n}"
    return f"WITH {', '.join(ctes)} SELECT {quote(key)} FROM i", tuple(plans)


def bulk_insert_chain(connection: Connection, inserts: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]) -> None:
    """Insert rows into several tables, in order, as `bulk_insert` would (no conflicts skipped).

    On PostgreSQL it is one statement, each earlier table's INSERT a data-modifying CTE: one
    round trip instead of one per table. Rows may reference rows inserted before them in the
    chain: foreign keys are checked at the end of the statement. On SQLite, one `bulk_insert`
    per table.
    """
    inserts = [(table, rows) for table, rows in inserts if rows]
    if connection.dialect.name != "postgresql" or len(inserts) < 2:
        for table, rows in inserts:
            bulk_insert(connection, table, rows)
        return
    shape = tuple((table, tuple(rows[0])) for table, rows in inserts)

    def build() -> tuple[str, list[_InsertPlan]]:
        plans = [_plan(connection.dialect, table, columns, False, ()) for table, columns in shape]
        # Only `_plan`'s texts (the Tables' own quoted names and placeholders) are joined here.
        ctes = ", ".join(f"i{n} AS ({plan.sql()})" for n, plan in enumerate(plans[:-1]))
        return f"WITH {ctes} {plans[-1].sql()}", plans

    sql, plans = _statement(("chain", *shape), build)
    documents = tuple(_document(plan, columns, rows) for plan, (_, columns), (_, rows) in zip(plans, shape, inserts))
    _on_the_driver(connection, sql, documents, fetch=False)


# -- planner statistics after a bulk insert ---------------------------------------------------------

# A batch this large, and at least this share of the rows a table's statistics know of, is
# followed by an ANALYZE of the table (PostgreSQL): the share is autovacuum's own default
# (autovacuum_analyze_scale_factor), but autovacuum looks only once a minute
# (autovacuum_naptime), and the dispatcher and the callbacks of a batch start at once.
ANALYZE_AFTER_ROWS = 1000
ANALYZE_AFTER_SHARE = 0.1


def refresh_statistics(session: Session, table: Table, added: int) -> bool:
    """ANALYZE `table` if the `added` rows just committed leave its planner statistics stale.

    Without statistics (a new database) or with those of a table a tenth the size, PostgreSQL
    plans the dismissal queue's statements as if the table were nearly empty: a status index
    scanned to find one row by its id, all our pending dismissals hashed for each callback's lookup
    (bench/README). Runs in a transaction of its own on `session`, after the caller's commit; a
    failure is logged and swallowed, since the rows are already stored. True if it analyzed.
    """
    dialect = session.get_bind().dialect
    if added < ANALYZE_AFTER_ROWS or dialect.name != "postgresql":
        return False
    try:
        known = session.execute(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                {"t": table.name}).scalar_one()
        if added < ANALYZE_AFTER_SHARE * max(known, 0):
            session.rollback()
            return False
        name = dialect.identifier_preparer.format_table(table)
        session.execute(text(f"ANALYZE {name}"))
        session.commit()
        return True
    except Exception as exc:  # noqa: BLE001 - the batch is stored; the plans catch up with autovacuum
        with contextlib.suppress(Exception):  # the connection may be the failure
            session.rollback()
        _log.warning("could not refresh planner statistics", extra={"table": table.name, "error": type(exc).__name__})
        return False
