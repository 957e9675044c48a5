"""Results out of the ledger: every table as Parquet or CSV, and as DataFrames for a notebook.

Both read a private snapshot (`dihal.ledger.console.snapshot`), never the ledger itself, so an open notebook
or a long export cannot make a concurrent `dihal run` wait or queue its rows. A file is written next to its
final name and renamed into place, so a reader never finds half a Parquet file.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from dihal.ledger.console import snapshot
from dihal.ledger.store import READ_CONFIG, LedgerError

FORMATS = ("parquet", "csv")


def _tables(con, wanted: list[str] | None) -> list[str]:
    """The tables named, or every table but schema_version; a `<table>_named` view only when named (by default
    each result would be written twice)."""
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()]
    views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    if not wanted:
        return [t for t in tables if t != "schema_version"]
    found = tables + sorted(views)
    unknown = [t for t in wanted if t not in found]
    if unknown:
        raise LedgerError(f"no table {', '.join(map(repr, unknown))} in the ledger (it has: {', '.join(found)})")
    return list(wanted)


def export(root: Path | str, out_dir: Path | str, fmt: str = "parquet", tables: list[str] | None = None) -> list[Path]:
    """Write each table (all but schema_version when `tables` is empty; views when named) to out_dir/<table>.<fmt>."""
    if fmt not in FORMATS:
        raise LedgerError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LedgerError(f"cannot write {out_dir}: {err.strerror or err}") from None
    written = []
    with snapshot(Path(root)) as copy:
        con = duckdb.connect(str(copy), read_only=True)  # external access on: it writes the files
        try:
            for table in _tables(con, tables):
                path = out_dir / f"{table}.{fmt}"
                tmp = path.with_name(f".{path.name}.tmp")
                rel = con.table(table)
                rel.to_parquet(str(tmp)) if fmt == "parquet" else rel.to_csv(str(tmp), header=True)
                os.replace(tmp, path)
                written.append(path)
        except OSError as err:
            raise LedgerError(f"cannot write {out_dir}: {err.strerror or err}") from None
        finally:
            con.close()
    return written


def frames(root: Path | str, tables: list[str] | None = None) -> dict:
    """{table: pandas.DataFrame} of the ledger's tables (all but schema_version when `tables` is empty; views when
    named, e.g. `bridge_results_named`)."""
    with snapshot(Path(root)) as copy:
        con = duckdb.connect(str(copy), read_only=True, config=READ_CONFIG)
        try:
            return {t: con.table(t).df() for t in _tables(con, tables)}
        finally:
            con.close()
