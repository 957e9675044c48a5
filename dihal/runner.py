"""`dihal run`: validate → compile → `dvc repro` → ingest into the ledger.

DVC decides what to recompute; dihal only asks it for the spec's final stages. The
ledger is written once at the end, in one transaction, so an interrupted or failed
run leaves earlier results as they were and adds only a `runs` row saying how it
ended.
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

from filelock import FileLock

from dihal import ingest, ledger, provenance
from dihal.checks import check_resources
from dihal.hashing import canonical_json, semantic_dict, spec_hash
from dihal.pipeline import Plan, compile_spec
from dihal.spec import Spec, load_spec


class RunFailed(RuntimeError):
    def __init__(self, message: str, run_id: str):
        super().__init__(message)
        self.run_id = run_id


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
    errs = [ln for ln in lines if re.search(r"Error|error:|ERROR", ln)]
    return "\n".join((errs or lines)[-6:])


def run_spec(path: Path | str, root: Path | str = ".", *, echo=None) -> RunResult:
    root = Path(root).resolve()
    spec, text = load_spec(path)  # both raise SpecError before anything is written
    depth = check_resources(spec, str(path))
    h = spec_hash(spec)
    ensure_project(root)
    with FileLock(str(root / ".dihal" / "dvc.yaml.lock")):
        plan = compile_spec(spec, root, depth)
    run = {
        "run_id": uuid.uuid4().hex[:16], "spec_hash": h, "spec_name": spec.name,
        "git_revision": provenance.git_revision(root), "code_version": provenance.code_version(),
        "packages": provenance.package_versions(), "seed": spec.seed, "host": provenance.host(),
        "started_at": datetime.now(timezone.utc).replace(tzinfo=None), "stages_total": len(plan.stages),
    }  # fmt: skip
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
        with ledger.writer(root) as con:
            _record_spec(con, spec, h, text)
            ledger.replace_results(con, h, tables)
            _record_run(con, run, "succeeded", None, ran)
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        with ledger.writer(root) as con:
            _record_spec(con, spec, h, text)
            _record_run(con, run, status, str(err) or type(err).__name__, ran)
        if isinstance(err, RunFailed):
            raise
        if isinstance(err, Exception):
            raise RunFailed(f"{type(err).__name__}: {err}", run["run_id"]) from err
        raise
    return RunResult(spec, h, plan, run["run_id"], ran)


def _record_spec(con, spec: Spec, h: str, text: str) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute(
        "INSERT INTO specs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (spec_hash) DO UPDATE SET "
        "name = excluded.name, yaml_text = excluded.yaml_text, last_seen = excluded.last_seen",
        [h, spec.name, canonical_json(semantic_dict(spec)), text, now, now],
    )


def _record_run(con, run: dict, status: str, error: str | None, ran: list[str]) -> None:
    row = {**run, "ended_at": datetime.now(timezone.utc).replace(tzinfo=None), "status": status,
           "error": error, "stages_run": len(ran)}  # fmt: skip
    ledger.insert_rows(con, "runs", [row])
