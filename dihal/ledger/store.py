"""The DuckDB ledger: every result, keyed by spec hash, with its provenance.

Stages write files (DVC outputs); the ledger is filled once at the end of a run,
in one transaction under a file lock, because DuckDB admits one writing process
and parallel runs must neither corrupt nor lose rows. Results are replaced per
spec hash (same spec → same rows, never duplicates); the runs table is the log of
every attempt, failed ones included. Queries go through a read-only connection
with external access disabled and its configuration locked, and only single
plain reads are accepted (`check_read_only`), so a query can neither change the
ledger, its session settings, nor touch files.

The ledger is derived data. Any other process that holds the file open -- even a
read-only notebook or the DuckDB CLI -- makes DuckDB refuse a writer, so a writer
waits for it with a bounded back-off (`DIHAL_LEDGER_WAIT` seconds), says once
which process holds the file, and then gives up cleanly: the caller queues its
transaction (`dihal.ledger.queue`) and the next writer replays it. DuckDB refuses
readers while another process writes, too, so readers (reports, `dihal ledger
sql`, a concurrent run's summary) wait the same way, then fail with a LedgerError.
Everything in the file can be re-created from `artifacts/` and the records under
`ledger/` (`dihal ledger rebuild`). The tables, their migrations and views are in
`dihal.ledger.schema` (the names callers imported from here before it moved stay importable).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import duckdb
from filelock import FileLock

from dihal.ledger.errors import LedgerBusy, LedgerError, LedgerUnavailable
from dihal.ledger.schema import INTERFACE_SCHEMA as INTERFACE_SCHEMA
from dihal.ledger.schema import MIGRATIONS as MIGRATIONS
from dihal.ledger.schema import REFERENCE_SCHEMA as REFERENCE_SCHEMA
from dihal.ledger.schema import RESULT_TABLES, current_names, ensure_schema
from dihal.ledger.schema import SCHEMA as SCHEMA
from dihal.ledger.schema import SCHEMA_STEPS as SCHEMA_STEPS
from dihal.ledger.schema import SCHEMA_VERSION as SCHEMA_VERSION
from dihal.ledger.schema import schema_version as schema_version
from dihal.utils.terminal import clean

LEDGER_FILE = "dihal.duckdb"


def ledger_path(root: Path) -> Path:
    return Path(root) / "ledger" / LEDGER_FILE


def ledger_wait() -> float:
    """Seconds a writer waits for another process to release the file (`DIHAL_LEDGER_WAIT`, default 60)."""
    try:
        return max(0.0, float(os.environ.get("DIHAL_LEDGER_WAIT", "60")))
    except ValueError:
        return 60.0


def _stderr(msg: str) -> None:
    print(clean(msg, newlines=True), file=sys.stderr, flush=True)


def lock_holder(error_text: str) -> str:
    """'PID 123: python3 -m jupyter ...' from DuckDB's lock error, with the command line when /proc has it."""
    m = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", error_text)
    if not m:
        return "another process"
    exe, pid = m.group(1), m.group(2)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    cmd = cmd or exe
    return f"PID {pid}: {cmd[:117] + '...' if len(cmd) > 120 else cmd}"


def connect_writable(
    path: Path,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
):
    """Open the ledger for writing, waiting up to `wait` seconds (doubling back-off) while another process holds it.

    DuckDB's own error names the holding process; it is shown once, with what to do, so a user whose notebook
    holds the file can close it while the run waits instead of finding the run failed afterwards.
    """
    return _connect_waiting(path, "writing", {}, wait, notify, sleep)


# What a read-only connection may do: nothing outside the ledger file (no file reads or writes, no extensions,
# no ATTACH) and no setting changes (profiling output, threads, optimizer ...), enforced by DuckDB itself.
READ_CONFIG = {"enable_external_access": False, "lock_configuration": True}
MAX_DELAY = 1.0  # longest pause between tries: a reader or writer notices a released file within a second


def connect_readonly(
    path: Path,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
):
    """Open the ledger read-only, waiting like a writer while another process writes it.

    DuckDB lets one process hold a writable connection and refuses every other process, readers included, so
    a report rendered while a concurrent run ingests would otherwise fail at once; ingests are short
    transactions, so waiting for them is the right thing to do.
    """
    return _connect_waiting(path, "reading", READ_CONFIG, wait, notify, sleep)


def _connect_waiting(
    path: Path,
    purpose: str,
    config: dict,
    wait: float | None,
    notify: Callable[[str], None] | None,
    sleep: Callable[[float], None],
):
    """duckdb.connect, retried with a doubling back-off (capped at MAX_DELAY) while a lock conflict lasts.

    The holder is named once; after `wait` seconds the conflict becomes LedgerBusy, any other I/O error
    LedgerUnavailable -- never a raw duckdb exception."""
    wait = ledger_wait() if wait is None else wait
    notify = notify or _stderr
    deadline, delay, told = time.monotonic() + wait, 0.05, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=purpose == "reading", config=config)
        except duckdb.IOException as err:
            text = str(err)
            if "lock" not in text.lower():
                raise LedgerUnavailable(f"could not open the ledger {path} for {purpose}: {text}") from None
            holder = lock_holder(text)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LedgerBusy(
                    f"the ledger {path} stayed open in another process ({holder}) for {wait:g} s; "
                    f"could not open it for {purpose}",
                    holder,
                ) from None
            if not told:
                notify(
                    f"ledger: {path} is open in another process ({holder}). Close that connection (a notebook's "
                    f"duckdb.connect, the DuckDB CLI) if it is not a dihal run; waiting up to {wait:g} s "
                    f"(DIHAL_LEDGER_WAIT) before {purpose} ..."
                )
                told = True
            sleep(min(delay, left))
            delay = min(delay * 2, MAX_DELAY)


_LOCKS: dict[str, FileLock] = {}


@contextmanager
def file_lock(root: Path):
    """Serialises dihal's own writers (and the records they keep next to the ledger) across processes.

    One FileLock object per path, so that a holder may take it again (commit → writer) without deadlocking."""
    path = ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve()) + ".lock"
    lock = _LOCKS.setdefault(key, FileLock(key, timeout=600))
    with lock:
        yield path


@contextmanager
def writer(
    root: Path,
    *,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
    prepare: Callable[[object], None] | None = None,
):
    """A write transaction under the ledger's lock; rolled back on any error, so nothing half-written lands.

    `prepare(con)` runs first, outside the transaction: `dihal.ledger.queue.writer` replays the transactions
    earlier writers queued there, so a queued run lands as soon as any writer gets through. Raises LedgerBusy
    when another process holds the file longer than `wait`.
    """
    with file_lock(root) as path:
        con = connect_writable(path, wait, notify)
        try:
            ensure_schema(con)
            if prepare is not None:
                prepare(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()


_BATCH = 256  # rows per INSERT: DuckDB's executemany binds row by row (~0.5 s of a warm quickstart run)


def insert_rows(con, table: str, rows: Iterable[dict]) -> int:
    """INSERT OR REPLACE rows (dicts with the same keys) in multi-row statements."""
    rows = list(rows)
    if not rows:
        return 0
    cols = list(rows[0])
    one = f"({', '.join('?' for _ in cols)})"
    head = f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
    for start in range(0, len(rows), _BATCH):
        chunk = rows[start : start + _BATCH]
        con.execute(head + ", ".join([one] * len(chunk)), [_cell(r[c]) for r in chunk for c in cols])
    return len(rows)


def _cell(v):
    return json.dumps(v) if isinstance(v, (dict, list)) else v


def replace_results(con, spec_hash: str, tables: dict[str, list[dict]]) -> None:
    """A spec's result rows replace its old ones, table by table; rows made under an older schema (a transaction
    an older dihal queued) are written under the current column names."""
    for table in RESULT_TABLES:
        if table in tables:
            con.execute(f"DELETE FROM {table} WHERE spec_hash = ?", [spec_hash])
            insert_rows(con, table, [current_names(row) for row in tables[table]])


# The connection `one_reader` holds open for its ledger path, which `reader` hands out instead of a new one.
_SHARED: ContextVar[tuple[Path, duckdb.DuckDBPyConnection] | None] = ContextVar("dihal_shared_reader", default=None)


@contextmanager
def reader(root: Path, *, wait: float | None = None, notify: Callable[[str], None] | None = None):
    """A read-only connection (see READ_CONFIG), waiting up to `wait` s while another process writes the file.

    Callers keep it open only while they fetch rows (render after closing), so a reader delays a concurrent
    writer by one short read at most. Inside `one_reader` for the same ledger, that reader's connection."""
    path = ledger_path(root)
    shared = _SHARED.get()
    if shared is not None and shared[0] == path:
        yield shared[1]
        return
    if not path.exists():
        raise LedgerError(f"no ledger at {path} yet: `dihal run SPEC` creates it")
    con = connect_readonly(path, wait, notify)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def one_reader(root: Path):
    """Every `reader`/`query` of this ledger inside the block uses one read-only connection.

    The end-of-run summary asks about twenty small questions; opening the file for each (25 ms apiece, with
    the waiting and checks) was a fifth of a warm `dihal run`. Hold it only around reads that follow each
    other closely: a concurrent writer waits until the block ends."""
    with reader(root) as con:
        token = _SHARED.set((ledger_path(root), con))
        try:
            yield con
        finally:
            _SHARED.reset(token)


WRITE_HINT = (
    "the ledger is opened read-only: statements that write (INSERT, UPDATE, DELETE, CREATE, COPY ...) are refused"
)

# PRAGMAs that only report (DuckDB rewrites each into a read of a table function); every other PRAGMA changes a
# setting or the file and is refused, as are SET, CALL, ATTACH, COPY, EXPORT, LOAD/INSTALL and the rest.
READ_PRAGMAS = frozenset(
    {
        "table_info",
        "show",
        "show_tables",
        "show_tables_expanded",
        "show_databases",
        "database_list",
        "database_size",
        "storage_info",
        "metadata_info",
        "version",
        "platform",
        "functions",
        "collations",
        "user_agent",
    }
)
READ_STATEMENTS = ("SELECT", "EXPLAIN")  # SELECT covers FROM-first, WITH, VALUES, SHOW, DESCRIBE, SUMMARIZE


def check_read_only(sql: str) -> None:
    """Refuse (LedgerError) anything but one plain read, classified by DuckDB's own parser, before it runs.

    The connection's settings (READ_CONFIG) stop writes, file access and setting changes too; this check is the
    first line: it refuses with a message that says why, and it refuses what those settings let through (a
    second statement, CALL, CHECKPOINT, PRAGMAs that are not settings)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise LedgerError(f"query failed: {err}") from None
    except (TypeError, UnicodeError):  # bytes that are not UTF-8 (a shell passes them as surrogates)
        raise LedgerError("refused: the query is not valid UTF-8 text") from None
    if len(statements) != 1:
        raise LedgerError(
            f"refused: give exactly one read-only statement (got {len(statements)}); a PRAGMA or SET "
            "in front of a query would change the session's settings"
        )
    stmt = statements[0]
    kind = stmt.type.name
    if kind == "PRAGMA":
        m = re.match(r"\s*PRAGMA\s+(\w+)", stmt.query, re.IGNORECASE)
        name = m.group(1).lower() if m else "?"
        if name not in READ_PRAGMAS:
            raise LedgerError(f"{WRITE_HINT}; PRAGMA {name} is refused (allowed: {', '.join(sorted(READ_PRAGMAS))})")
    elif kind not in READ_STATEMENTS:
        hint = "; for a table function use SELECT * FROM f(...)" if kind == "CALL" else ""
        raise LedgerError(
            f"{WRITE_HINT}; a {kind} statement is refused: only SELECT (SHOW, DESCRIBE, ...), "
            f"EXPLAIN and read-only PRAGMAs run{hint}"
        )


def query_error(err: duckdb.Error) -> LedgerError:
    """A DuckDB error from a read-only query, as a LedgerError: a refused write or file access says why."""
    if isinstance(err, duckdb.InvalidInputException | duckdb.PermissionException):
        return LedgerError(f"{WRITE_HINT}.\n  DuckDB said: {str(err).splitlines()[0]}")
    return LedgerError(f"query failed: {err}")


def query(root: Path, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of one read-only statement; anything else, or any DuckDB error, is a LedgerError."""
    check_read_only(sql)
    with reader(root) as con:
        try:
            cur = con.execute(sql, params or [])
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()
        except duckdb.Error as err:
            raise query_error(err) from None
