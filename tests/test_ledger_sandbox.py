"""`dihal ledger sql` runs one plain read: everything else is a clean refusal (exit 1, a message, no traceback).

Found: `PRAGMA enable_profiling='json'; SELECT 1` was accepted (two statements, the first changing the session's
settings). Statements are classified by DuckDB's own parser (`duckdb.extract_statements`), and the connection
itself has external access disabled and its configuration locked.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from dihal.ledger import store as ledger

HOSTILE = [
    "PRAGMA enable_profiling='json'; SELECT 1",
    "PRAGMA enable_profiling='json'",
    "PRAGMA profiling_output='prof.json'",
    "PRAGMA disable_optimizer",
    "PRAGMA force_checkpoint",
    "SET threads = 1",
    "SET enable_external_access = true",
    "RESET threads",
    "SET VARIABLE x = 1",
    "SELECT 1; SELECT 2",
    "SELECT 1; DELETE FROM runs",
    "DELETE FROM runs",
    "INSERT INTO runs (run_id) VALUES ('x')",
    "UPDATE runs SET status = 'failed'",
    "DROP TABLE runs",
    "CREATE TABLE t (a INTEGER)",
    "CREATE MACRO m() AS 1",
    "ALTER TABLE runs ADD COLUMN x INTEGER",
    "ATTACH 'other.duckdb' AS other",
    "DETACH dihal",
    "USE memory",
    "INSTALL httpfs",
    "LOAD httpfs",
    "COPY runs TO 'leak.csv'",
    "COPY runs FROM 'leak.csv'",
    "EXPORT DATABASE 'dump'",
    "IMPORT DATABASE 'dump'",
    "CALL pragma_version()",
    "CALL checkpoint()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "PREPARE p AS SELECT 1",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('*')",
    "SELECT * FROM read_text('/etc/hostname')",
    "",
    "   ;  ",
]
READS = [
    ("SELECT count(*) AS n FROM runs", ["n"]),
    ("FROM runs SELECT run_id", ["run_id"]),
    ("SHOW TABLES", ["name"]),
    ("DESCRIBE runs", None),
    ("PRAGMA table_info('runs')", None),
    ("PRAGMA show_tables", None),
    ("PRAGMA database_size", None),
    ("SELECT * FROM pragma_table_info('runs')", None),
    ("EXPLAIN SELECT * FROM runs", None),
    ("SELECT 1;", ["1"]),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    with ledger.writer(root) as con:
        con.execute("INSERT INTO runs (run_id, status) VALUES ('r1', 'succeeded')")
    return root


def _sql(root, sql: str):
    return CliRunner().invoke(app, ["ledger", "sql", sql, "--project", str(root)])


@pytest.mark.parametrize("sql", HOSTILE)
def test_ledger_sql_refuses_anything_but_one_read(project, sql):
    res = _sql(project, sql)
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # a refusal, not an uncaught error
    assert "Traceback" not in res.output and ("refused" in res.output or "read-only" in res.output), res.output
    with pytest.raises(ledger.LedgerError):
        ledger.query(project, sql)


def test_refusals_change_nothing_and_write_no_files(project):
    for sql in HOSTILE:
        _sql(project, sql)
    assert ledger.query(project, "SELECT run_id, status FROM runs")[1] == [("r1", "succeeded")]
    names = {p.name for p in project.rglob("*")}
    assert not names & {"leak.csv", "dump", "other.duckdb", "prof.json"}, names


@pytest.mark.parametrize("sql, cols", READS)
def test_ledger_sql_keeps_plain_reads_working(project, sql, cols):
    res = _sql(project, sql)
    assert res.exit_code == 0, res.output
    got, _ = ledger.query(project, sql)
    if cols is not None:
        assert got == cols


def test_a_parameterised_read_still_works(project):
    assert ledger.query(project, "SELECT status FROM runs WHERE run_id = ?", ["r1"])[1] == [("succeeded",)]
