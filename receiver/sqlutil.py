"""Small dialect-aware SQL helpers (INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


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
