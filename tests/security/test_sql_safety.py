"""SQL only through SQLAlchemy parameters: no raw SQL in receiver/ is built from run-time values."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|DROP|ALTER|BEGIN|SET|WHERE|VALUES)\b")
RAW_SQL_CALLS = {"text", "exec_driver_sql", "_on_the_driver", "literal_column", "column"}

# Raw SQL that interpolates a value, each with why it is safe. Keyed by file and source text, so a
# new interpolation (or an edited one) fails the test until someone reviews it.
ALLOWED = {
    ("receiver/db.py", 'f"PRAGMA busy_timeout={int(_sqlite_busy_ms.get())}"'):
        "an int() of our own setting; PRAGMA takes no bound parameters",
    # bulk_insert's statements: table and column names from our own Table metadata, quoted by
    # the dialect's identifier preparer, and placeholders; every value is a bound parameter.
    ("receiver/sqlutil.py", 'f"INSERT INTO {table_name} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table_name}, %s)"'):
        "identifiers from Table metadata, quoted by the dialect; the rows are the bound %s",
    ("receiver/sqlutil.py", 'f"INSERT INTO {table_name} ({names}) VALUES "'):
        "identifiers from Table metadata, quoted by the dialect; values are ? placeholders",
    ("receiver/sqlutil.py", 'f"WITH {ctes} {plans[-1].sql()}"'):
        "joins _plan's INSERT texts (quoted Table identifiers, %s placeholders); the rows are bound",
    ("receiver/sqlutil.py", 'f"SELECT 0, {inserted_side} FROM i UNION ALL SELECT 1, {queried_side} FROM q"'):
        "RETURNING column names quoted by the dialect, NULL padding; no value",
    ("receiver/sqlutil.py", 'f"WITH i AS ({plan.sql()}), q AS ({query}) {sides}"'):
        "_plan's INSERT text and the caller's fixed query text (CANDIDATES_QUERY); every value is bound",
    # bulk_insert_linked's statement: _plan's INSERT texts, quoted column names and the caller's
    # fixed condition (matching.NO_CANDIDATE); the rows are bound documents.
    ("receiver/sqlutil.py", 'f"i AS ({plan.head} AS batch WHERE {only_if}{plan.tail})"'):
        "_plan's INSERT text and the caller's fixed condition text (NO_CANDIDATE)",
    ("receiver/sqlutil.py", 'f"SELECT {quote(parent_key)} FROM {parent}"'):
        "a column name quoted by the dialect, and the name of one of this statement's own CTEs (i, d1, …)",
    ("receiver/sqlutil.py", 'f"d{n} AS ({dependent_plan.head} AS r WHERE r.{quote(link)} IN ({within}){dependent_plan.tail})"'):
        "a CTE number, _plan's INSERT text (and RETURNING), column names quoted by the dialect, the text above",
    ("receiver/sqlutil.py", 'f"WITH {\', \'.join(ctes)} SELECT {quote(key)} FROM i"'):
        "joins the CTE texts above and a quoted column name; no value",
    ("receiver/sqlutil.py", 'f"ANALYZE {name}"'):
        "a Table of our own metadata, quoted by the dialect; ANALYZE takes no bound parameters",
}


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _dynamic(node: ast.expr) -> bool:
    """A string built at run time: f-string, concatenation, % or .format()."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return True
    if isinstance(node, ast.Call) and _name(node.func) in {"format", "join"}:
        return True
    return False


def _findings() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted((ROOT / "receiver").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            # 1. text()/exec_driver_sql()/execute() on a string built at run time (in any
            #    position: `_on_the_driver` takes the connection first).
            if isinstance(node, ast.Call) and node.args and (
                    _name(node.func) in RAW_SQL_CALLS | {"execute", "executescript"}):
                for arg in node.args:
                    if _dynamic(arg):
                        found.append((rel, ast.get_source_segment(source, arg), node.lineno))
            # 2. Any f-string that reads like SQL, wherever it goes.
            elif isinstance(node, ast.JoinedStr) and _dynamic(node):
                literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if (SQL_WORDS.search(literal) and re.search(r"\b(FROM|INTO|TABLE|PRAGMA|WHERE|SET)\b", literal)
                        or re.match(r"WITH\b", literal)):  # a statement of CTEs, built to be run later
                    found.append((rel, ast.get_source_segment(source, node), node.lineno))
    return found


def test_no_raw_sql_is_built_from_runtime_values():
    unexpected = [f"{file}:{line}: {snippet}" for file, snippet, line in _findings()
                  if (file, snippet) not in ALLOWED]
    assert not unexpected, "raw SQL built at run time (use bound parameters, or review and allow-list):\n" + \
        "\n".join(unexpected)


def test_the_allow_list_has_no_stale_entries():
    present = {(file, snippet) for file, snippet, _ in _findings()}
    assert set(ALLOWED) <= present, set(ALLOWED) - present


def test_the_scan_catches_interpolated_sql(tmp_path, monkeypatch):
    bad = 'from sqlalchemy import text\n\ndef f(s, gid):\n    s.execute(text(f"SELECT * FROM t WHERE g = \'{gid}\'"))\n'
    tree = ast.parse(bad)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) == "text")
    assert _dynamic(call.args[0])
