"""`dihal ledger sql` runs one plain read: everything else is a clean refusal (exit 1, a message, no traceback).

Found: `PRAGMA enable_profiling='json'; SELECT 1` was accepted (two statements, the first changing the session's
settings). Statements are classified by DuckDB's own parser (`duckdb.extract_statements`), and the connection
itself has external access disabled and its configuration locked.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from dihal.ledger import store as ledger
from dihal.ledger.console import run_query

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


# Bounds on what one console query may take (dihal.ledger.console): time, memory, rows, and the file itself.
RUNAWAY = [
    "SELECT count(*) FROM range(1000000000) a, range(1000) b",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT max(n) FROM t",
]


@pytest.mark.parametrize("sql", RUNAWAY)
def test_a_runaway_query_is_stopped_at_its_time_limit(project, sql):
    started = time.monotonic()
    res = CliRunner().invoke(app, ["ledger", "sql", sql, "--timeout", "1", "--project", str(project)])
    assert res.exit_code == 1, res.output
    assert "stopped after 1 s" in res.output and "--timeout" in res.output
    assert time.monotonic() - started < 30


def test_a_query_over_its_memory_limit_is_stopped(project):
    sql = "SELECT list(range) FROM range(200000000)"
    res = CliRunner().invoke(app, ["ledger", "sql", sql, "--memory", "100MB", "--project", str(project)])
    assert res.exit_code == 1, res.output
    assert "memory limit of 100MB" in res.output and "--memory" in res.output


def test_rows_past_the_limit_are_left_out_and_said_so(project):
    res = CliRunner().invoke(
        app, ["ledger", "sql", "SELECT * FROM range(20000000)", "-f", "csv", "--project", str(project)]
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "range" and len(lines) == 1 + 10_000 and lines[-1] == "9999"
    assert "the first 10,000 rows" in res.stderr
    answer = run_query(project, "SELECT * FROM range(5)", max_rows=5)
    assert len(answer.rows) == 5 and not answer.truncated


def test_a_query_that_is_not_utf8_is_refused(project):
    with pytest.raises(ledger.LedgerError, match="not valid UTF-8"):
        run_query(project, "SELECT '\udcff'")


def test_a_long_query_never_holds_up_a_writer(project):
    """The query runs on a snapshot: another process writes the ledger at once (no wait) while it runs."""
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.setdefault("err", _raises(lambda: run_query(project, RUNAWAY[0], timeout=4)))
    )
    thread.start()
    time.sleep(0.5)
    write = (
        "import sys; from pathlib import Path; from dihal.ledger import store\n"
        "with store.writer(Path(sys.argv[1]), wait=0) as con:\n"
        "    con.execute(\"INSERT INTO runs (run_id, status) VALUES ('during-query', 'succeeded')\")\n"
    )
    done = subprocess.run([sys.executable, "-c", write, str(project)], capture_output=True, text=True, timeout=60)
    still_running = thread.is_alive()
    thread.join()
    assert done.returncode == 0, done.stderr
    assert still_running and "stopped after 4 s" in str(out["err"])
    assert ledger.query(project, "SELECT status FROM runs WHERE run_id = 'during-query'")[1] == [("succeeded",)]


def _raises(fn) -> Exception | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    return None
