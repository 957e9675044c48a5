"""The `dihal` command line. Each command is a small typed function (typer)."""

from __future__ import annotations

import csv
import io
import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from dihal.spec.schema import SpecError
from dihal.utils.terminal import clean, console, json_safe, shown, text

app = typer.Typer(
    help="DiHAL experiments from one YAML spec: locate the most diffusion-friendly layer of a causal LM, "
    "replace the blocks below it with a diffusion bridge, and record everything in a DuckDB ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
ledger_app = typer.Typer(
    help="Query the DuckDB ledger (read-only); replay queued runs; rebuild it from artifacts/.", no_args_is_help=True
)
app.add_typer(ledger_app, name="ledger")

out = console()
err = console(stderr=True)
EXIT_SPEC = 2
EXIT_QUEUED = 75  # EX_TEMPFAIL: the run's results are on disk, its ledger rows wait in ledger/pending/

SpecArg = typer.Argument(..., exists=False, help="Path to a YAML experiment spec.")
RootOpt = typer.Option(
    Path("."), "--project", "-C", help="Project root: holds dvc.yaml, ledger/, reports/, artifacts/."
)


def _error(e: BaseException) -> None:
    """An error's message on stderr, in red, printed as data (it may quote names, paths, tokens)."""
    err.print(clean(e, newlines=True), style="red", highlight=False, markup=False)


@contextmanager
def _project_state():
    """A damaged or unwritable project file (`dihal.utils.state`): its one-line message and EXIT_STATE."""
    from dihal.utils.state import EXIT_STATE, ProjectStateError

    try:
        yield
    except ProjectStateError as e:
        _error(e)
        raise typer.Exit(EXIT_STATE) from None


def _fail_spec(e: SpecError) -> None:
    err.print(clean(e.render(), newlines=True), markup=False, highlight=False)
    raise typer.Exit(EXIT_SPEC)


def _load_checked(spec_path: Path, project: Path, notes: list[str] | None = None):
    """The spec with its relative paths resolved (against the spec file's folder), checked, and its depth."""
    from dihal.compile.preflight import check_resources
    from dihal.spec.paths import load_project_spec

    try:
        spec, _ = load_project_spec(spec_path, project)
        depth = check_resources(spec, str(spec_path), project, notes)
    except SpecError as e:
        _fail_spec(e)
    return spec, depth


def _hash(spec, spec_path: Path, project: Path) -> str:
    """The spec hash, its local files read by content (a file unreadable now is a spec error)."""
    from dihal.spec.hashing import project_spec_hash

    try:
        return project_spec_hash(spec, project)
    except SpecError as e:
        _fail_spec(e)


@app.command()
def validate(spec_path: Path = SpecArg, project: Path = RootOpt) -> None:
    """Check a spec (schema, files, layers against the backbone's depth) without computing anything."""
    notes: list[str] = []
    spec, depth = _load_checked(spec_path, project, notes)
    h = _hash(spec, spec_path, project)
    depth_note = (
        f"backbone has {depth} blocks"
        if depth
        else "layer numbers not checked against the backbone (its config is not available offline)"
    )
    out.print(
        f"[green]ok[/green] {shown(spec_path)}: spec hash {h}; {depth_note}",
        highlight=False,
        soft_wrap=True,
    )
    for note in notes:
        out.print(f"[yellow]note[/yellow]: {shown(note)}", highlight=False, soft_wrap=True)


@app.command("compile")
def compile_cmd(spec_path: Path = SpecArg, project: Path = RootOpt) -> None:
    """Write the spec's stages into the project's dvc.yaml (no compute); `dvc repro` can then run them."""
    from filelock import FileLock

    from dihal.compile.plan import compile_spec
    from dihal.execute.runner import ensure_project

    spec, depth = _load_checked(spec_path, project)
    with _project_state():
        ensure_project(project)
        with FileLock(str(project / ".dihal" / "dvc.yaml.lock")):  # as `dihal run` does: one registry writer
            plan = compile_spec(spec, project, depth)
    for st in plan.stages:
        out.print(f"{st.name:<32} → {clean(st.out)}", highlight=False, markup=False)


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


@app.command()
def run(
    spec_path: Path = SpecArg,
    project: Path = RootOpt,
    report: bool = typer.Option(True, help="Write reports/<name>.html and reports/index.html at the end."),
    executor: ExecutorName = typer.Option(
        ExecutorName.local,
        "--executor",
        help="local: `dvc repro`; ray: the changed stages as Ray tasks, in parallel "
        "where the DAG allows (needs Ray: the package's ray extra).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray cluster to use (auto, ray://host:10001); default: start a local one. Only with --executor ray.",
    ),
    retries: int = typer.Option(2, "--retries", min=0, help="Ray: retries of a failed or lost stage task."),
) -> None:
    """Validate, compile and run a spec through `dvc repro`, ingest results into the ledger, print a summary (ℓ* with its stability)."""
    from dihal.execute import signals
    from dihal.execute.executors import ExecutorUnavailable, get
    from dihal.execute.runner import RunFailed, run_spec
    from dihal.ledger.queue import LedgerQueued
    from dihal.report.summary import print_summary

    try:
        chosen = get("ray", address=address, retries=retries) if executor is ExecutorName.ray else get("local")
    except ExecutorUnavailable as e:
        _error(e)
        raise typer.Exit(1) from None
    try:
        with signals.raise_on_signals(), _project_state():  # SIGTERM, SIGHUP end the run as Ctrl-C does
            result = run_spec(spec_path, project, executor=chosen)
    except SpecError as e:
        _fail_spec(e)
    except RunFailed as e:
        where = (
            f"queued in {e.queued}"
            if e.queued
            else "recorded in the ledger"
            if e.recorded
            else "NOT recorded: the ledger could not be written, see above; `dihal ledger rebuild` re-creates it"
        )
        err.print(f"[red]run {e.run_id} failed[/red] ({shown(where)}):\n{shown(e, newlines=True)}", highlight=False)
        raise typer.Exit(1) from None
    except LedgerQueued as e:
        err.print(
            f"[yellow]the run finished but the ledger could not be written[/yellow]: {shown(e, newlines=True)}",
            highlight=False,
        )
        raise typer.Exit(EXIT_QUEUED) from None
    except KeyboardInterrupt as e:  # SIGINT, SIGTERM or SIGHUP: exit 128 + signum, as a shell reports it
        try:
            err.print(
                f"[yellow]{signals.describe(e)}[/yellow]: the ledger keeps its earlier results; the run is logged."
            )
        except OSError:
            pass  # SIGHUP: the terminal may be gone
        raise typer.Exit(signals.exit_code(e)) from None
    ok = _write_run_report(project, result, spec_path) if report else True
    if not _print_run_summary(project, result, print_summary) or not ok:
        raise typer.Exit(1)


def _after_run(what: str, result, reason: str, retry: str) -> None:
    """Say that the run itself succeeded and is recorded, what failed after it, and how to get it later."""
    err.print(
        f"[yellow]run {result.run_id} succeeded and its results are recorded, but its {what} failed[/yellow]:"
        f"\n{shown(reason, newlines=True)}\n{shown(retry)}",
        highlight=False,
    )


def _write_run_report(project: Path, result, spec_path: Path) -> bool:
    """The run's report; a failure after a succeeded run (the ledger held too long, a rendering bug) is a message
    and exit 1, never a traceback that reads as if the run had failed."""
    from dihal.ledger.store import LedgerError
    from dihal.report import write_reports

    try:
        result.report = write_reports(project, result.spec_hash)
    except Exception as e:  # noqa: BLE001 - the run is done; say what failed and how to redo it
        reason = str(e) if isinstance(e, LedgerError) else f"{type(e).__name__}: {e}"
        _after_run("report", result, reason, f"render it later with `dihal report {spec_path}`")
        return False
    return True


def _print_run_summary(project: Path, result, print_summary) -> bool:
    """The summary read back from the ledger; a ledger held by another process is a message, not a traceback."""
    from dihal.ledger.store import LedgerError

    try:
        print_summary(out, project, result)
    except LedgerError as e:
        _after_run("summary", result, str(e), "query it later with `dihal ledger runs` or `dihal ledger sql`")
        return False
    return True


@app.command()
def gc(
    keep: list[str] = typer.Option(
        None, "--keep", help="Keep only these specs (names or spec files); unregister every other one."
    ),
    drop: list[str] = typer.Option(None, "--drop", help="Unregister these specs (names or spec files)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; change nothing."),
    project: Path = RootOpt,
) -> None:
    """Remove the stages and artifacts no registered spec uses (unregistering specs first with --keep/--drop)."""
    from filelock import FileLock

    from dihal.compile.project import gc as collect
    from dihal.compile.project import registered
    from dihal.utils.state import unwritable

    with _project_state():
        try:
            (project / ".dihal").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise unwritable(project, e) from None
        with FileLock(str(project / ".dihal" / "dvc.yaml.lock")):
            try:
                res = collect(project, keep=keep or None, drop=drop or [], dry_run=dry_run)
            except ValueError as e:
                _error(e)
                raise typer.Exit(EXIT_SPEC) from None
    verb = "would remove" if dry_run else "removed"
    for what, items in (
        ("spec", res.unregistered),
        ("stage", res.stages),
        ("artifact", res.artifacts),
        ("stage config", res.configs),
    ):
        for item in items:
            out.print(f"{verb} {what} {clean(item)}", highlight=False, soft_wrap=True, markup=False)
    if res.dvc_gc:
        err.print(clean(res.dvc_gc, newlines=True), style="yellow", highlight=False, markup=False)
    with _project_state():
        kept = [r["name"] for r in registered(project)]
    out.print(
        f"registered: {', '.join(clean(k) for k in kept) or 'none'}; "
        f"{len(res.stages)} stage(s), {len(res.artifacts)} artifact dir(s) {verb}",
        highlight=False,
        markup=False,
    )


@app.command(hidden=True)
def stage(config: Path = typer.Argument(..., help="A stage config under .dihal/stages/.")) -> None:
    """Run one compiled stage (what dvc.yaml's commands call). A failure is one line on stderr, its traceback
    in `.dihal/logs/<stage>.log`; an interrupt propagates as it came (`dvc repro` and the runner act on it)."""
    from dihal.execute.stage_log import failure_line
    from dihal.stages import run_stage

    try:
        run_stage(config)
    except Exception as e:
        print(clean(failure_line(config, e)), file=sys.stderr, flush=True)
        raise typer.Exit(1) from None


@app.command()
def sample(
    spec_path: Path = SpecArg,
    n: int = typer.Option(4, "--n", min=1, help="Number of samples."),
    prompt: str = typer.Option("", help="Text whose true layer-ℓ states are clamped as the prefix."),
    seed: int = typer.Option(0, min=0, help="Sampling seed."),
    steps: int | None = typer.Option(None, min=1, help="DDIM steps (default: the spec's eval.sampling_steps)."),
    temperature: float | None = typer.Option(None, min=0.0, help="0 = argmax (default: the spec's eval.temperature)."),
    layer: int | None = typer.Option(None, min=1, help="Which trained layer to sample from (sweeps; default ℓ*)."),
    project: Path = RootOpt,
) -> None:
    """Generate text with the hybrid (bridge + retained upper blocks + final norm + LM head) of a run spec."""
    from dihal.execute.sample import SampleError, sample_texts

    spec, depth = _load_checked(spec_path, project)
    try:
        texts = sample_texts(
            spec, project, depth, n=n, prompt=prompt, seed=seed, steps=steps, temperature=temperature, layer=layer
        )
    except SampleError as e:
        _error(e)
        raise typer.Exit(1) from None
    for i, generated in enumerate(texts):
        out.print(f"[bold]#{i}[/bold] {shown(prompt)}[cyan]{shown(generated)}[/cyan]", highlight=False)


@app.command("report")
def report_cmd(spec_path: Path = SpecArg, project: Path = RootOpt) -> None:
    """Render reports/<name>.html for a spec already run, and refresh reports/index.html."""
    from dihal.ledger.store import LedgerError
    from dihal.report import write_reports

    spec, _ = _load_checked(spec_path, project)
    h = _hash(spec, spec_path, project)
    try:
        path = write_reports(project, h)
    except LedgerError as e:
        _error(e)
        raise typer.Exit(1) from None
    out.print(f"wrote {clean(path)}", highlight=False, markup=False)


class Gpu(str, Enum):
    h100 = "h100"
    a100 = "a100"
    l4 = "l4"


class PlanFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def plan(
    spec_path: Path = SpecArg,
    gpu: Gpu | None = typer.Option(
        None,
        "--gpu",
        help="Estimate wall time on this GPU class (datasheet peak × "
        "utilisation); default: this machine, from a quick matmul benchmark.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Workers running independent stages in parallel."),
    utilisation: float | None = typer.Option(
        None,
        "--utilisation",
        min=0.01,
        max=1.0,
        help="Share of peak sustained (default 0.4 on a GPU, 0.5 of the measured matmul rate here).",
    ),
    fmt: PlanFormat = typer.Option(PlanFormat.table, "--format", "-f"),
    project: Path = RootOpt,
) -> None:
    """Estimate tokens, FLOPs, memory, disk and wall time per stage of a spec, without loading weights."""
    from dihal.cost import CostError, estimate

    spec, _ = _load_checked(spec_path, project)
    try:
        est = estimate(spec, project, gpu.value if gpu else None, workers, utilisation)
    except CostError as e:
        _error(e)
        raise typer.Exit(1) from None
    if fmt is PlanFormat.json:
        sys.stdout.write(json.dumps(est.as_dict(), indent=2) + "\n")
    else:
        from dihal.cost.render import print_plan

        print_plan(out, est)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _emit(cols: list[str], rows: list[tuple], fmt: Format) -> None:
    """Query results in the chosen format, every value printed as data (`dihal.utils.terminal`): JSON is
    strict JSON (non-finite numbers are null), CSV and table cells carry no control characters or markup."""
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
        t = Table()
        for c in cols:
            t.add_column(text(c))
        for r in rows:
            t.add_row(*(text("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for v in r))
        out.print(t)


@ledger_app.command("sql")
def ledger_sql(
    query: str = typer.Argument(..., help="A SQL query (DuckDB dialect)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Stop the query after this many seconds."),
    memory: str = typer.Option("1GB", "--memory", help="DuckDB's memory limit for the query (e.g. 512MB, 4GB)."),
    max_rows: int = typer.Option(10_000, "--max-rows", min=1, help="Print at most this many rows."),
    project: Path = RootOpt,
) -> None:
    """Run one read-only SQL query against a snapshot of the ledger, within a time, memory and row limit.

    Statements that write are refused. The query reads a copy, so it never holds up a concurrent run."""
    from dihal.ledger.console import run_query
    from dihal.ledger.store import LedgerError

    try:
        answer = run_query(project, query, timeout=timeout, memory=memory, max_rows=max_rows)
    except LedgerError as e:
        _error(e)
        raise typer.Exit(1) from None
    _emit(answer.columns, answer.rows, fmt)
    if answer.truncated:
        err.print(f"(the first {max_rows:,} rows; --max-rows shows more)", style="yellow", highlight=False)


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
        _error(e)
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
        _error(e)
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
            _fail_spec(e)
        named.append((spec, source, None, spec_hash(spec, inputs), record_json(spec, inputs)))
    try:
        res = rebuild(
            project, named, notify=lambda m: err.print(clean(m, newlines=True), highlight=False, markup=False)
        )
    except LedgerError as e:
        _error(e)
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


if __name__ == "__main__":  # pragma: no cover
    app()
