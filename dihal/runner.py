"""`dihal run`: validate → compile → `dvc repro` → ingest into the ledger.

DVC decides what to recompute; dihal only asks it for the spec's final stages. The
ledger is written once at the end, in one transaction, so an interrupted or failed
run leaves earlier results as they were and adds only a `runs` row saying how it
ended. When another process holds the ledger file that transaction is queued
(`dihal.ledger_queue`) rather than lost, and the failure path never retries a
writer that just timed out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from filelock import FileLock

from dihal import ingest, ledger_queue, manifest, provenance, signals
from dihal.checks import check_resources
from dihal.hashing import canonical_json, semantic_dict, spec_hash
from dihal.ledger_queue import LedgerQueued
from dihal.paths import load_project_spec
from dihal.pipeline import Plan, compile_spec
from dihal.spec import Spec


class RunFailed(RuntimeError):
    """The run failed; its `runs` row is in the ledger, or queued in `queued` when the ledger was held."""

    def __init__(self, message: str, run_id: str, queued: Path | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.queued = queued


@dataclass
class RunResult:
    spec: Spec
    spec_hash: str
    plan: Plan
    run_id: str
    stages_run: list[str] = field(default_factory=list)
    report: Path | None = None


def ensure_project(root: Path) -> None:
    """A DVC project at `root` (git-backed when it is a git work tree), with the dirs dihal writes.

    Under a file lock: two first runs started together in a bare folder would both `dvc init` it."""
    (root / ".dihal").mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".dihal" / "init.lock")):
        if not (root / ".dvc").is_dir():
            in_git = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True,
                                    text=True).stdout.strip()  # fmt: skip
            args = [] if in_git and Path(in_git).resolve() == root.resolve() else ["--no-scm"]
            _dvc(["init", "--quiet", *args], root, check=True)
            _dvc(["config", "core.analytics", "false"], root, check=True)
            _dvc(["config", "cache.type", manifest.CACHE_TYPE], root, check=True)
        if manifest.upgrade_cache_type(root, lambda args: _dvc(args, root, check=True)):  # old: hardlink,copy
            _dvc(["checkout", "--relink", "--quiet"], root)  # best effort: copies replace the old hard links
    for d in ("ledger", "reports"):
        (root / d).mkdir(exist_ok=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # stage commands call `dihal`: use this interpreter's
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _dvc(args: list[str], root: Path, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=_env())
    if check and proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def dvc_repro(targets: list[str], root: Path, echo=None) -> tuple[int, str, list[str]]:
    """Run `dvc repro` on the targets, streaming its output; return (code, output tail, stages that ran).

    DVC runs in a session of its own, so a signal meant for dihal (SIGTERM to its PID) never hits DVC
    mid-write; on any interruption (SIGINT, SIGTERM, SIGHUP: `dihal.signals`) dihal ends DVC's whole
    group the way Ctrl-C would, so DVC releases its locks and no stage keeps computing, then re-raises."""
    if echo is None:  # resolved per call: tests and callers may have swapped sys.stderr; False = silent
        echo = sys.stderr
    chunks: list[bytes] = []

    def pump() -> None:
        nonlocal echo
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            chunks.append(chunk)
            if echo is not False:
                try:
                    echo.write(chunk.decode(errors="replace"))
                    echo.flush()
                except (OSError, ValueError):  # the terminal went away (SIGHUP): keep draining DVC's pipe
                    echo = False

    proc = guard = None
    t = threading.Thread(target=pump, daemon=True)
    with signals.raise_on_signals():
        try:
            with signals.deferred():  # a signal landing mid-start is delivered once `proc` names the child
                proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *targets], cwd=root, env=_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=signals.child_setup())  # fmt: skip
                t.start()
                guard = signals.watchdog(proc.pid)  # stops DVC should dihal itself be SIGKILLed
            code = proc.wait()
        except BaseException:
            if proc is not None:
                signals.stop_group(proc)
            raise
        finally:
            if guard is not None:
                guard.release()
            if proc is not None:
                t.join(timeout=10)
                signals.release_dead_locks(root)
    text = b"".join(chunks).decode(errors="replace")
    ran = re.findall(r"Running stage '([^']+)'", text)
    return code, text[-4000:], ran


# DVC's words when another process holds a stage's rwlock entry or the repo lock.
_BUSY = re.compile(r"is busy, it is being blocked by|Unable to acquire lock")


def dvc_wait() -> float:
    """Seconds a run waits for another run computing a stage both share (`DIHAL_DVC_WAIT`, default 3600)."""
    try:
        return max(0.0, float(os.environ.get("DIHAL_DVC_WAIT", "3600")))
    except ValueError:
        return 3600.0


def repro_waiting(targets: list[str], root: Path, echo=None, sleep=time.sleep) -> tuple[int, str, list[str]]:
    """`dvc_repro`, again while another run holds a stage this spec shares (DVC refuses to run one stage
    from two processes and fails the second at once): once that run has computed it, DVC finds it done
    and goes on. Specs of one project share extract and score stages whenever their data and geometry
    agree, so two specs started together meet here often."""
    deadline, delay, ran_all = time.monotonic() + dvc_wait(), 2.0, []
    while True:
        code, tail, ran = dvc_repro(targets, root, echo=echo)
        ran_all += ran
        if code == 0 or not _BUSY.search(tail) or time.monotonic() >= deadline:
            return code, tail, ran_all
        signals.release_dead_locks(root)
        print(f"dihal: another run holds a stage this spec needs; trying again in {delay:.0f} s "
              f"(waiting up to {dvc_wait():g} s in all, DIHAL_DVC_WAIT)", file=sys.stderr, flush=True)  # fmt: skip
        sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 30.0)


def _error_summary(tail: str) -> str:
    lines = [ln for ln in tail.splitlines() if ln.strip() and "\r" not in ln]
    errs = [ln for ln in lines if re.search(r"Error|error:|ERROR|^stage \S+ failed: ", ln)]
    return "\n".join((errs or lines)[-6:])


def run_spec(path: Path | str, root: Path | str = ".", *, echo=None, executor="local") -> RunResult:
    root = Path(root).resolve()
    spec, text = load_project_spec(path, root)  # both raise SpecError before anything is written
    depth = check_resources(spec, str(path), root)
    h = spec_hash(spec)
    ensure_project(root)
    with FileLock(str(root / ".dihal" / "dvc.yaml.lock")):
        plan = compile_spec(spec, root, depth)
    run = {
        "run_id": uuid.uuid4().hex[:16], "spec_hash": h, "spec_name": spec.name,
        "git_revision": provenance.git_revision(root), "code_version": provenance.code_version(),
        "packages": provenance.package_versions(), "seed": spec.seed, "host": provenance.host(),
        "started_at": _now(), "stages_total": len(plan.stages),
    }  # fmt: skip
    record = {"spec_hash": h, "name": spec.name, "canonical_json": canonical_json(semantic_dict(spec)),
              "yaml_text": text}  # fmt: skip
    ran: list[str] = []
    try:
        manifest.repair_corrupted(plan, root, echo)  # damaged outputs are recomputed, not restored (issue 9)
        from dihal.executors import resolve  # local: repro_waiting as before; ray: dihal.executors.ray

        chosen = resolve(executor)
        code, tail, ran = chosen.run(plan, root, spec=spec, echo=echo)
        if code != 0:
            what = "dvc repro" if chosen.name == "local" else f"the {chosen.name} executor"
            raise RunFailed(f"{what} failed (exit {code}):\n{_error_summary(tail)}", run["run_id"])
        tables = {
            **ingest.geometry_rows(plan, root, h, run, spec.seed, spec.geometry.warn_top_share),
            **ingest.bridge_rows(plan, root, h, run),
            **ingest.correlation_rows(plan, root, h, run, spec.seed),
            **ingest.reference_rows(plan, root, h, run),
            **ingest.interface_rows(plan, root, h, run),
        }
    except BaseException as err:
        _record_failure(root, record, run, err, ran, depth)
    try:
        _commit(root, record, run, "succeeded", None, ran, tables, depth)
    except (LedgerQueued, KeyboardInterrupt):
        raise  # queued: the results are on disk and the rows land with the next writer
    except Exception as err:  # the rows could not be written (a bug): say so in a runs row of its own
        _record_failure(root, record, run, err, ran, depth)
    return RunResult(spec, h, plan, run["run_id"], ran)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _record_failure(root: Path, record: dict, run: dict, err: BaseException, ran: list[str],
                    depth: int | None) -> NoReturn:  # fmt: skip
    """Log how the run ended (no result rows) and re-raise: RunFailed for errors, KeyboardInterrupt as it came
    (its `runs.error` names the signal: "interrupted by SIGTERM")."""
    interrupted = isinstance(err, KeyboardInterrupt)  # Ctrl-C, or SIGTERM/SIGHUP as `signals.Interrupted`
    status = "interrupted" if interrupted else "failed"
    error = signals.describe(err) if interrupted else str(err) or type(err).__name__
    queued = None
    try:
        _commit(root, record, run, status, error, ran, None, depth)
    except LedgerQueued as q:
        queued = q.path
        print(f"ledger: {q}", file=sys.stderr, flush=True)
    except Exception as bad:  # noqa: BLE001 - never let the log of a failure hide the failure itself
        print(f"ledger: could not record how run {run['run_id']} ended ({type(bad).__name__}: {bad})",
              file=sys.stderr, flush=True)  # fmt: skip
    if isinstance(err, RunFailed):
        err.queued = queued
        raise err
    if isinstance(err, Exception):
        raise RunFailed(f"{type(err).__name__}: {err}", run["run_id"], queued) from err
    raise err


def _commit(root: Path, record: dict, run: dict, status: str, error: str | None, ran: list[str],
            results: dict | None, depth: int | None) -> None:  # fmt: skip
    now = _now()
    row = {**run, "ended_at": now, "status": status, "error": error, "stages_run": len(ran)}
    ledger_queue.commit(root, ledger_queue.transaction({**record, "seen_at": now}, row, results, depth))
