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
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from filelock import FileLock

from dihal import ingest, ledger_queue, provenance
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
    """A DVC project at `root` (git-backed when it is a git work tree), with the dirs dihal writes."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".dvc").is_dir():
        in_git = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
        args = [] if in_git and Path(in_git).resolve() == root.resolve() else ["--no-scm"]
        _dvc(["init", "--quiet", *args], root, check=True)
        _dvc(["config", "core.analytics", "false"], root, check=True)
        _dvc(["config", "cache.type", "hardlink,copy"], root, check=True)
    for d in ("ledger", "reports", ".dihal"):
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
    """Run `dvc repro` on the targets, streaming its output; return (code, output tail, stages that ran)."""
    if echo is None:  # resolved per call: tests and callers may have swapped sys.stderr; False = silent
        echo = sys.stderr
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *targets], cwd=root, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    chunks: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            chunks.append(chunk)
            if echo is not False:
                echo.write(chunk.decode(errors="replace"))
                echo.flush()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        code = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    t.join()
    text = b"".join(chunks).decode(errors="replace")
    ran = re.findall(r"Running stage '([^']+)'", text)
    return code, text[-4000:], ran


def _error_summary(tail: str) -> str:
    lines = [ln for ln in tail.splitlines() if ln.strip() and "\r" not in ln]
    errs = [ln for ln in lines if re.search(r"Error|error:|ERROR|^stage \S+ failed: ", ln)]
    return "\n".join((errs or lines)[-6:])


def run_spec(path: Path | str, root: Path | str = ".", *, echo=None) -> RunResult:
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
        code, tail, ran = dvc_repro(plan.targets, root, echo=echo)
        if code != 0:
            raise RunFailed(f"dvc repro failed (exit {code}):\n{_error_summary(tail)}", run["run_id"])
        tables = {
            **ingest.geometry_rows(plan, root, h, run, spec.seed, spec.geometry.warn_top_share),
            **ingest.bridge_rows(plan, root, h, run),
            **ingest.correlation_rows(plan, root, h, run, spec.seed),
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
    """Log how the run ended (no result rows) and re-raise: RunFailed for errors, KeyboardInterrupt as it came."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    queued = None
    try:
        _commit(root, record, run, status, str(err) or type(err).__name__, ran, None, depth)
    except LedgerQueued as q:
        queued = q.path
        print(f"ledger: {q}", file=sys.stderr, flush=True)
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
