"""`dihal run`: validate → compile → `dvc repro` → ingest into the ledger.

DVC decides what to recompute; dihal only asks it for the spec's final stages. The
ledger is written once at the end, in one transaction, so an interrupted or failed
run leaves earlier results as they were and adds only a `runs` row saying how it
ended. When another process holds the ledger file that transaction is queued
(`dihal.ledger.queue`) rather than lost, and the failure path never retries a
writer that just timed out.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from filelock import FileLock

from dihal.compile import dvc_views
from dihal.compile.plan import Plan, compile_spec
from dihal.compile.preflight import check_resources
from dihal.execute import signals
from dihal.execute.dvc import dvc
from dihal.execute.stage_output import VERBOSITIES, StageOutput, run_log_path
from dihal.ledger import ingest, provenance
from dihal.ledger import queue as ledger_queue
from dihal.ledger.queue import LedgerQueued
from dihal.spec.hashing import record_json, spec_hash
from dihal.spec.inputs import input_digests
from dihal.spec.paths import load_project_spec
from dihal.spec.schema import Spec
from dihal.stages import manifest
from dihal.utils.state import unwritable
from dihal.utils.terminal import clean


class RunFailed(RuntimeError):
    """The run failed; its `runs` row is in the ledger (`recorded`), queued in `queued` when the ledger was
    held, or neither when the ledger could not be written at all (damaged, unwritable)."""

    def __init__(self, message: str, run_id: str, queued: Path | None = None, recorded: bool = False):
        super().__init__(message)
        self.run_id = run_id
        self.queued = queued
        self.recorded = recorded


@dataclass
class RunResult:
    spec: Spec
    spec_hash: str
    plan: Plan
    run_id: str
    stages_run: list[str] = field(default_factory=list)
    report: Path | None = None
    log: Path | None = None  # everything DVC and the stages printed (`dihal.execute.stage_output`)


def ensure_project(root: Path) -> None:
    """A DVC project at `root` (git-backed when it is a git work tree), with the dirs dihal writes.

    Under a file lock: two first runs started together in a bare folder would both `dvc init` it. A folder
    dihal cannot write is a ProjectStateError that says so, before anything else is tried."""
    try:
        (root / ".dihal").mkdir(parents=True, exist_ok=True)
        with open(root / ".dihal" / "init.lock", "a"):  # the lock file FileLock opens next, opened for writing
            pass
    except OSError as err:
        raise unwritable(root, err) from None
    with FileLock(str(root / ".dihal" / "init.lock")):
        if not (root / ".dvc").is_dir():
            in_git = subprocess.run(
                ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
            ).stdout.strip()
            args = [] if in_git and Path(in_git).resolve() == root.resolve() else ["--no-scm"]
            dvc(["init", "--quiet", *args], root, check=True)
            dvc(["config", "core.analytics", "false"], root, check=True)
            dvc(["config", "cache.type", manifest.CACHE_TYPE], root, check=True)
            if not args:  # a git project: `dvc plots show` writes dvc_plots/, a rendering, never a source
                with open(root / ".gitignore", "a") as f:
                    f.write("/dvc_plots/\n")
        if manifest.upgrade_cache_type(root, lambda args: dvc(args, root, check=True)):  # old: hardlink,copy
            dvc(["checkout", "--relink", "--quiet"], root)  # best effort: copies replace the old hard links
        dvc_views.install(root)  # `dvc plots show`: dihal's plot templates and a page that renders offline
    for d in ("ledger", "reports"):
        (root / d).mkdir(exist_ok=True)


def _error_summary(tail: str) -> str:
    lines = [ln for ln in tail.splitlines() if ln.strip() and "\r" not in ln]
    errs = [ln for ln in lines if re.search(r"Error|error:|ERROR|^stage \S+ failed: ", ln)]
    return "\n".join((errs or lines)[-6:])


def run_spec(
    path: Path | str,
    root: Path | str = ".",
    *,
    echo=None,
    executor="local",
    overrides: list[str] | None = None,
    verbosity: str = "normal",
) -> RunResult:
    """Run one spec. `echo`: where stage output is shown (default stderr, False: nowhere); `verbosity`: how much
    of it (`quiet`, `normal`, `verbose`: `dihal.execute.stage_output`); all of it goes to `RunResult.log`."""
    if verbosity not in VERBOSITIES:
        raise ValueError(f"verbosity {verbosity!r}: expected one of {', '.join(VERBOSITIES)}")
    root = Path(root).resolve()
    spec, text = load_project_spec(path, root, overrides)  # both raise SpecError before anything is written
    depth = check_resources(spec, str(path), root)
    inputs = input_digests(spec, root)
    h = spec_hash(spec, inputs)
    ensure_project(root)
    with FileLock(str(root / ".dihal" / "dvc.yaml.lock")):
        plan = compile_spec(spec, root, depth)
    run = {
        "run_id": uuid.uuid4().hex[:16],
        "spec_hash": h,
        "spec_name": spec.name,
        "git_revision": provenance.git_revision(root),
        "code_version": provenance.code_version(),
        "packages": {**provenance.package_versions(), **provenance.plugin_versions(plan.stages)},
        "seed": spec.seed,
        "host": provenance.host(),
        "started_at": _now(),
        "stages_total": len(plan.stages),
    }
    record = {
        "spec_hash": h,
        "name": spec.name,
        "canonical_json": record_json(spec, inputs),
        "yaml_text": text,
    }
    ran: list[str] = []
    log = run_log_path(root, run["run_id"])
    try:
        manifest.repair_corrupted(plan, root, echo)  # damaged outputs are recomputed, not restored
        from dihal.execute.executors import resolve  # local: dvc repro; ray: dihal.execute.executors.ray

        chosen = resolve(executor)
        shown = StageOutput(plan, root, sys.stderr if echo is None else echo, log, verbosity)
        try:
            code, tail, ran = chosen.run(plan, root, spec=spec, echo=shown)
        finally:
            shown.close()
        if code != 0:
            what = "dvc repro" if chosen.name == "local" else f"the {chosen.name} executor"
            raise RunFailed(
                f"{what} failed (exit {code}):\n{_error_summary(tail)}\n(all of its output: {_relative(log, root)})",
                run["run_id"],
            )
        tables = {
            **ingest.geometry_rows(plan, root, h, run, spec.seed, spec.geometry.warn_top_share),
            **ingest.bridge_rows(plan, root, h, run),
            **ingest.correlation_rows(plan, root, h, run, spec.seed),
            **ingest.reference_rows(plan, root, h, run),
            **ingest.interface_rows(plan, root, h, run),
            **ingest.frontier_rows(plan, root, h, run),
        }
    except BaseException as err:
        _record_failure(root, record, run, err, ran, depth)
    try:
        _commit(root, record, run, "succeeded", None, ran, tables, depth)
    except (LedgerQueued, KeyboardInterrupt):
        raise  # queued: the results are on disk and the rows land with the next writer
    except Exception as err:  # the rows could not be written (a bug): say so in a runs row of its own
        _record_failure(root, record, run, err, ran, depth)
    return RunResult(spec, h, plan, run["run_id"], ran, log=log if log.exists() else None)


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _record_failure(
    root: Path, record: dict, run: dict, err: BaseException, ran: list[str], depth: int | None
) -> NoReturn:
    """Log how the run ended (no result rows) and re-raise: RunFailed for errors, KeyboardInterrupt as it came
    (its `runs.error` names the signal: "interrupted by SIGTERM")."""
    interrupted = isinstance(err, KeyboardInterrupt)  # Ctrl-C, or SIGTERM/SIGHUP as `signals.Interrupted`
    status = "interrupted" if interrupted else "failed"
    error = signals.describe(err) if interrupted else str(err) or type(err).__name__
    queued, recorded = None, False
    try:
        _commit(root, record, run, status, error, ran, None, depth)
        recorded = True
    except LedgerQueued as q:
        queued = q.path
        print(f"ledger: {clean(q)}", file=sys.stderr, flush=True)
    except Exception as bad:  # noqa: BLE001 - never let the log of a failure hide the failure itself
        print(
            clean(f"ledger: could not record how run {run['run_id']} ended ({type(bad).__name__}: {bad})"),
            file=sys.stderr,
            flush=True,
        )
    if isinstance(err, RunFailed):
        err.queued, err.recorded = queued, recorded
        raise err
    if isinstance(err, Exception):
        raise RunFailed(f"{type(err).__name__}: {err}", run["run_id"], queued, recorded) from err
    raise err


def _commit(
    root: Path,
    record: dict,
    run: dict,
    status: str,
    error: str | None,
    ran: list[str],
    results: dict | None,
    depth: int | None,
) -> None:
    now = _now()
    row = {**run, "ended_at": now, "status": status, "error": error, "stages_run": len(ran)}
    ledger_queue.commit(root, ledger_queue.transaction({**record, "seen_at": now}, row, results, depth))
