"""`dihal ledger …`: read-only SQL on a snapshot, the latest runs, replaying queued runs, rebuilding."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.measure import Measurement
from rich.table import Table

from dihal.cli.common import RootOpt, err, error, fail_spec, out
from dihal.spec.errors import SpecError
from dihal.utils.terminal import clean, json_safe, text

ledger_app = typer.Typer(
    help="Query the DuckDB ledger (read-only); replay queued runs; rebuild it from artifacts/.", no_args_is_help=True
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _cell(v) -> str:
    return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def _table(cols: list[str], rows: list[tuple]) -> Table:
    t = Table()
    for c in cols:
        t.add_column(text(c))
    for r in rows:
        t.add_row(*(text(_cell(v)) for v in r))
    return t


def too_wide(table: Table) -> bool:
    """The table at its natural width would not fit the terminal (piped output: 160 columns), so rich would
    wrap or cut its cells."""
    unbounded = out.options.update(width=1_000_000)  # measured against the screen, rich would clamp to it
    return Measurement.get(out, unbounded, table).maximum > out.width


def vertical_lines(cols: list[str], rows: list[tuple]) -> list[str]:
    """Rows laid out like psql's `\\x`: a `-[ row N ]` separator, then one `column | value` line per field, names
    padded to one width. Names and values pass through `clean` (newlines and control characters as escapes)."""
    names = [clean(c) for c in cols]
    pad = max((len(n) for n in names), default=0)
    body = [[f"{n.ljust(pad)} | {clean(_cell(v))}" for n, v in zip(names, r)] for r in rows]
    width = min(max((len(line) for lines in body for line in lines), default=0), out.width)
    out_lines = []
    for i, lines in enumerate(body, 1):
        head = f"-[ row {i} ]"
        out_lines += [head + "-" * max(0, width - len(head)), *lines]
    return out_lines


def _emit(cols: list[str], rows: list[tuple], fmt: Format, vertical: bool | None = False) -> None:
    """Query results in the chosen format, every value printed as data (`dihal.utils.terminal`): JSON is
    strict JSON (non-finite numbers are null), CSV and table cells carry no control characters or markup.
    `vertical`: the table format one field per line; None: so when the table would not fit the terminal."""
    if fmt is Format.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([clean(c, newlines=True) for c in cols])
        w.writerows([["" if v is None else clean(v, newlines=True) for v in r] for r in rows])
        sys.stdout.write(buf.getvalue())
    elif fmt is Format.json:
        records = [dict(zip(cols, json_safe(list(r)))) for r in rows]
        sys.stdout.write(json.dumps(records, default=str, indent=2, allow_nan=False) + "\n")
    else:
        t = _table(cols, rows)
        if vertical is None and rows and too_wide(t):
            vertical = True
            err.print(
                "(wider than the terminal: one line per field; -X keeps the table, -f csv for scripts)",
                style="yellow",
                highlight=False,
            )
        if vertical:
            sys.stdout.write("".join(line + "\n" for line in vertical_lines(cols, rows)))
        else:
            out.print(t)


@ledger_app.command("sql")
def ledger_sql(
    query: str = typer.Argument(..., help="A SQL query (DuckDB dialect)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Stop the query after this many seconds."),
    memory: str = typer.Option("1GB", "--memory", help="DuckDB's memory limit for the query (e.g. 512MB, 4GB)."),
    max_rows: int = typer.Option(10_000, "--max-rows", min=1, help="Print at most this many rows."),
    vertical: bool | None = typer.Option(
        None,
        "--vertical/--no-vertical",
        "-x/-X",
        help="One 'column | value' line per field, a separator per row (like psql's \\x); by default so when "
        "the table would be wider than the terminal. Table format only.",
        show_default=False,
    ),
    project: Path = RootOpt,
) -> None:
    """Run one read-only SQL query against a snapshot of the ledger, within a time, memory and row limit.

    Statements that write are refused. The query reads a copy, so it never holds up a concurrent run.
    Each result table has a view with its spec's name: SELECT * FROM layer_geometry_named WHERE
    spec_name = 'quickstart' AND spec_is_latest (docs/ledger.md)."""
    from dihal.ledger.console import run_query
    from dihal.ledger.store import LedgerError

    if vertical is not None and fmt is not Format.table:
        raise typer.BadParameter(
            f"lays out the table format; --format {fmt.value} has no columns to fit", param_hint="--vertical / -x"
        )
    try:
        answer = run_query(project, query, timeout=timeout, memory=memory, max_rows=max_rows)
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    _emit(answer.columns, answer.rows, fmt, vertical)
    if not answer.rows:
        err.print("(0 rows)", style="yellow", highlight=False)
    if answer.truncated:
        err.print(f"(the first {max_rows:,} rows; --max-rows shows more)", style="yellow", highlight=False)


class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


@ledger_app.command("export")
def ledger_export(
    out_dir: Path = typer.Argument(..., help="Folder to write <table>.parquet or <table>.csv into."),
    fmt: ExportFormat = typer.Option(ExportFormat.parquet, "--format", "-f"),
    tables: list[str] = typer.Option(None, "--table", "-t", help="Only these tables (repeatable); default: all."),
    project: Path = RootOpt,
) -> None:
    """Write the ledger's tables as Parquet or CSV files, read from a snapshot (a run is never held up)."""
    from dihal.ledger.export import export
    from dihal.ledger.store import LedgerError

    try:
        written = export(project, out_dir, fmt.value, tables or None)
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    for path in written:
        out.print(f"wrote {clean(path)}", highlight=False, markup=False)


@ledger_app.command("runs")
def ledger_runs(
    limit: int = typer.Option(20, min=1),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    project: Path = RootOpt,
) -> None:
    """List the latest runs: spec, status, stages run, revision, timing, error."""
    from dihal.ledger.store import LedgerError
    from dihal.ledger.store import query as run_query

    sql = (
        "SELECT run_id, spec_name, left(spec_hash, 12) AS spec, status, stages_run, stages_total, "
        "left(git_revision, 12) AS git, started_at, round(epoch(ended_at - started_at), 1) AS seconds, "
        "left(error, 120) AS error FROM runs ORDER BY started_at DESC LIMIT ?"
    )
    try:
        with_rows = run_query(project, sql, [limit])
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    _emit(*with_rows, fmt)


@ledger_app.command("replay")
def ledger_replay(project: Path = RootOpt) -> None:
    """Write the runs queued in ledger/pending/ (left there while another process held the ledger)."""
    from dihal.ledger.queue import pending, writer
    from dihal.ledger.store import LedgerError

    n = len(pending(project))
    try:
        with writer(project, notify=lambda m: err.print(clean(m, newlines=True), highlight=False, markup=False)):
            pass  # opening a writer replays the queue first
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    left = len(pending(project))
    out.print(f"replayed {n - left} queued run(s)" + (f"; {left} could not be applied (named above)" if left else ""))


@ledger_app.command("rebuild")
def ledger_rebuild(
    specs: list[Path] = typer.Argument(
        None,
        help="Spec files to include besides the ledger's and ledger/specs/ records (for specs run before records).",
    ),
    project: Path = RootOpt,
) -> None:
    """Re-create ledger/dihal.duckdb from the stage outputs under artifacts/ and the records in ledger/."""
    from dihal.ledger.rebuild import rebuild
    from dihal.ledger.store import LedgerError
    from dihal.spec.hashing import record_json, spec_hash
    from dihal.spec.inputs import input_digests
    from dihal.spec.paths import load_project_spec

    named = []
    for path in specs or []:
        try:
            spec, source = load_project_spec(path, project)
            inputs = input_digests(spec, project)
        except SpecError as e:
            fail_spec(e)
        named.append((spec, source, None, spec_hash(spec, inputs), record_json(spec, inputs)))
    try:
        res = rebuild(
            project, named, notify=lambda m: err.print(clean(m, newlines=True), highlight=False, markup=False)
        )
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    out.print(
        f"rebuilt {res.path}: {len(res.from_artifacts)} spec(s) from artifacts/, {res.n_runs} run(s)"
        + (f"; previous ledger kept as {res.backup}" if res.backup else ""),
        highlight=False,
        markup=False,
    )
    for label, names in (
        ("results carried over from the previous ledger (artifacts incomplete)", res.carried),
        ("results LOST (artifacts incomplete, no previous ledger)", res.missing),
        ("no successful run, so no results", res.no_results),
    ):
        if names:
            out.print(f"  {label}: {', '.join(clean(n) for n in names)}", highlight=False, markup=False)
    if res.missing:
        raise typer.Exit(1)
