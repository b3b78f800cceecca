"""A database error never carries the values it was given: they would reach the logs with it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from receiver.db import make_engine

MARKER = "member-account-7f3a9c"


@pytest.mark.parametrize("how", ["core", "driver_sql"])
def test_errors_of_the_service_engines_hide_parameters(backend, how):
    engine = make_engine(backend.url)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as caught:
            if how == "core":
                conn.execute(text("SELECT 1 FROM no_such_table WHERE :v = :v"), {"v": MARKER})
            else:
                placeholder = "?" if backend.name == "sqlite" else "%s"
                conn.exec_driver_sql(f"SELECT 1 FROM no_such_table WHERE {placeholder} = 'x'", (MARKER,))
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "no_such_table" in message  # the error itself is still there to read
    assert MARKER not in message
    assert "parameters hidden" in message
