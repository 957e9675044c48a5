"""`dihal run`: validate, compile, run the stages, ingest into the ledger, report and summarise; or with
`--dry-run`, say which stages would run. A sweep (`-m`) runs its specs one after another."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from dihal.cli.common import (
    EXIT_QUEUED,
    EXIT_SPEC,
    MultiOpt,
    RootOpt,
    SetOpt,
    SpecArg,
    err,
    error,
    fail_spec,
    out,
    project_state,
)
from dihal.cli.loading import compile_one, variants
from dihal.spec.errors import SpecError
from dihal.utils.terminal import clean, shown


def _dry_run(spec_path: Path, project: Path, sets: list[str]) -> None:
    """Compile, then ask DVC which stages would run (`dvc status`: it works where `dvc repro --dry` fails on a
    pipeline that never ran, treeverse/dvc#9021); nothing is computed and the ledger is not touched."""
    from dihal.execute.dvc import dvc

    spec, plan = compile_one(spec_path, project, sets)
    proc = dvc(["status", "--json", *(st.name for st in plan.stages)], project)
    try:
        status = json.loads(proc.stdout or "{}")
    except ValueError:
        error(RuntimeError(f"dvc status failed:\n{proc.stdout}{proc.stderr}"))
        raise typer.Exit(1) from None
    todo = [st for st in plan.stages if st.name in status]
    out.print(
        f"{clean(spec.name)}: {len(todo)} of {len(plan.stages)} stage(s) would run (dry run: nothing computed)",
        highlight=False,
        markup=False,
    )
    for st in plan.stages:
        why = "would run" if st.name in status else "up to date"
        out.print(f"  {st.name:<32} {why}", highlight=False, markup=False)


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


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
    overrides: list[str] = SetOpt,
    multirun: bool = MultiOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and compile, then list the stages that would run; compute nothing."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only the headline, where the results are, and errors and warnings."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also print DVC's own output as it comes (its advice, the stage commands)."
    ),
) -> None:
    """Validate, compile and run a spec through `dvc repro`, ingest results into the ledger, print a summary (ℓ* with its stability).

    While the stages run, each is announced as `stage 5/7 train (ℓ = 3, seed 0): <stage name>` (or `up to
    date`) and shows its progress: a live bar on a terminal, a plain line with elapsed time and ETA every 10 %
    (at least every 30 s, DIHAL_PROGRESS_INTERVAL) when stderr is a file or a pipe. DVC's bookkeeping and
    advice and known harmless library warnings are left out; everything DVC and the stages printed is in
    .dihal/logs/run-<run id>.log, named at the end.
    """
    from dihal.execute.executors import ExecutorUnavailable, get

    if quiet and verbose:
        err.print("--quiet and --verbose: choose one", style="red", highlight=False, markup=False)
        raise typer.Exit(EXIT_SPEC)
    verbosity = "quiet" if quiet else "verbose" if verbose else "normal"
    sets_list = variants(overrides, multirun)
    if dry_run:
        for sets in sets_list:
            _dry_run(spec_path, project, sets)
        return
    try:
        chosen = get("ray", address=address, retries=retries) if executor is ExecutorName.ray else get("local")
    except ExecutorUnavailable as e:
        error(e)
        raise typer.Exit(1) from None
    for sets in sets_list:  # a sweep runs its specs one after another; the first failure ends it
        _run_one(spec_path, project, chosen, sets, report, verbosity)


def _run_one(spec_path: Path, project: Path, chosen, sets: list[str], report: bool, verbosity: str) -> None:
    from dihal.execute import signals
    from dihal.execute.runner import RunFailed, run_spec
    from dihal.ledger.queue import LedgerQueued
    from dihal.report.summary import print_summary

    try:
        with signals.raise_on_signals(), project_state():  # SIGTERM, SIGHUP end the run as Ctrl-C does
            result = run_spec(spec_path, project, executor=chosen, overrides=sets, verbosity=verbosity)
    except SpecError as e:
        fail_spec(e)
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
    ok = _write_run_report(project, result, spec_path, sets) if report else True
    if not _print_run_summary(project, result, print_summary, brief=verbosity == "quiet") or not ok:
        raise typer.Exit(1)


def _after_run(what: str, result, reason: str, retry: str) -> None:
    """Say that the run itself succeeded and is recorded, what failed after it, and how to get it later."""
    err.print(
        f"[yellow]run {result.run_id} succeeded and its results are recorded, but its {what} failed[/yellow]:"
        f"\n{shown(reason, newlines=True)}\n{shown(retry)}",
        highlight=False,
    )


def _write_run_report(project: Path, result, spec_path: Path, sets: list[str]) -> bool:
    """The run's report; a failure after a succeeded run (the ledger held too long, a rendering bug) is a message
    and exit 1, never a traceback that reads as if the run had failed."""
    from dihal.ledger.store import LedgerError
    from dihal.report import write_reports

    try:
        result.report = write_reports(project, result.spec_hash)
    except Exception as e:  # noqa: BLE001 - the run is done; say what failed and how to redo it
        reason = str(e) if isinstance(e, LedgerError) else f"{type(e).__name__}: {e}"
        _after_run(
            "report",
            result,
            reason,
            f"render it later with `dihal report {spec_path}{''.join(f' -S {o}' for o in sets)}`",
        )
        return False
    return True


def _print_run_summary(project: Path, result, print_summary, brief: bool = False) -> bool:
    """The summary read back from the ledger; a ledger held by another process is a message, not a traceback."""
    from dihal.ledger.store import LedgerError

    try:
        print_summary(out, project, result, brief=brief)
    except LedgerError as e:
        _after_run("summary", result, str(e), "query it later with `dihal ledger runs` or `dihal ledger sql`")
        return False
    return True
