"""`dihal ledger sql`: one read-only query with a time, memory and row bound, on a snapshot of the ledger.

A query typed at a console can be anything: a 10^12-row cross join, an unbounded recursive CTE, twenty
million rows to print. Three bounds keep it from hurting anyone:

- **It runs on a private copy.** The ledger is copied while a read-only connection holds DuckDB's lock (so no
  writer is mid-transaction), the lock is released, and the query runs on the copy. However long it runs, a
  concurrent `dihal run` never waits for it and never has to queue its rows.
- **Time and memory limits.** A timer interrupts the query after `timeout` seconds (DuckDB's own interrupt);
  DuckDB's `memory_limit` stops it before the machine runs out.
- **A row limit.** Rows are fetched as a stream, `max_rows` at most, so printing is bounded too; the caller
  says when more were left out.

Every failure is a LedgerError that says which bound was hit and which option changes it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from dihal.ledger.schema import SCHEMA_VERSION, ensure_schema, schema_version
from dihal.ledger.store import READ_CONFIG, LedgerError, check_read_only, ledger_path, query_error, reader

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY = "1GB"
DEFAULT_MAX_ROWS = 10_000


@dataclass(frozen=True)
class Answer:
    columns: list[str]
    rows: list[tuple]
    truncated: bool  # more rows than max_rows: only the first max_rows are here
    seconds: float


@contextmanager
def snapshot(root: Path):
    """A private copy of the ledger (and its WAL, if a writer left one), taken under DuckDB's read lock, and
    brought to the current schema (`current_schema`)."""
    path = ledger_path(root)
    folder = Path(tempfile.mkdtemp(prefix="dihal-sql-"))
    try:
        with reader(root):  # holds the file: no writer can be mid-transaction while it is copied
            for src in (path, path.with_name(path.name + ".wal")):
                if src.exists():
                    try:
                        shutil.copyfile(src, folder / src.name)
                    except OSError as err:
                        raise LedgerError(f"could not copy the ledger {path} to query it: {err}") from None
        current_schema(folder / path.name)
        yield folder / path.name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def current_schema(copy: Path) -> None:
    """Migrate a private copy written by an older dihal (and not written since), so a query, an export or a
    DataFrame sees the names docs/ledger.md documents; the ledger itself migrates at its next write. A copy
    from a newer dihal, or one a step cannot migrate, is left as it is and queried so."""
    con = duckdb.connect(str(copy))
    try:
        if schema_version(con) < SCHEMA_VERSION:
            ensure_schema(con)
    except LedgerError:
        pass
    finally:
        con.close()


def run_query(
    root: Path,
    sql: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory: str = DEFAULT_MEMORY,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Answer:
    """One read-only statement (`check_read_only`) on a snapshot, within the three bounds."""
    check_read_only(sql)
    config = {**READ_CONFIG, "memory_limit": memory}
    started = time.monotonic()
    with snapshot(root) as copy:
        try:
            con = duckdb.connect(str(copy), read_only=True, config=config)
        except duckdb.Error as err:  # most likely a memory limit DuckDB cannot parse
            raise LedgerError(f"could not query with memory limit {memory!r}: {str(err).splitlines()[0]}") from None
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            cur = con.execute(sql)
            if cur.description is None:
                return Answer([], [], False, time.monotonic() - started)
            cols = [d[0] for d in cur.description]
            rows = cur.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise LedgerError(
                f"the query was stopped after {timeout:g} s (its time limit; --timeout sets another)"
            ) from None
        except duckdb.OutOfMemoryException:
            raise LedgerError(
                f"the query needed more than its memory limit of {memory} (--memory sets another)"
            ) from None
        except duckdb.Error as err:
            raise query_error(err) from None
        finally:
            timer.cancel()
            con.close()
    return Answer(cols, rows[:max_rows], len(rows) > max_rows, time.monotonic() - started)
