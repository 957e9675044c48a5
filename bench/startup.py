"""Where users wait on dihal itself rather than on compute: `dihal validate`, and a warm `dihal run`.

Prints wall times (best of --repeat, each a fresh process, as a user would start it) for:
- `python -c pass`, the interpreter's own floor;
- `dihal validate specs/quickstart.yaml` (target < 0.5 s: it imports neither torch nor transformers);
- `dvc status` of the quickstart's stages alone, the floor of any warm run (DVC hashes every dep and out);
- a warm `dihal run specs/quickstart.yaml --no-report` and a warm `dihal run specs/quickstart.yaml`
  (target < 2.5 s): nothing to compute; validate, compile, `dvc repro`, ingest, ledger write, summary
  (and the HTML report for the second).

The warm runs need a project where the quickstart has run; `--project DIR` (default: a scratch project
under the system temp dir, reused between invocations) is brought there first with one cold run
(~4 minutes on 2 cores) when it has no ledger yet.

    .venv/bin/python -m bench.startup [--project DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "quickstart.yaml"
BIN = Path(sys.executable).parent


def wall(cmd: list[str], cwd: Path, repeat: int) -> float:
    """Best wall time of `repeat` fresh processes (the least disturbed by other work on the machine)."""
    best = float("inf")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DIHAL_PROGRESS": "0"}
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        took = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        best = min(best, took)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path(tempfile.gettempdir()) / "dihal-bench-startup")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    project = args.project.resolve()
    dihal = [str(BIN / "dihal")]
    if not (project / "ledger" / "dihal.duckdb").exists():
        print(f"cold quickstart run in {project} first (minutes) ...", flush=True)
        project.mkdir(parents=True, exist_ok=True)
        wall([*dihal, "run", str(SPEC), "--project", str(project)], project, 1)
    from dihal.compile.plan import plan
    from dihal.compile.preflight import check_resources
    from dihal.spec.paths import load_project_spec  # no torch: the same modules `dihal validate` uses

    spec, _ = load_project_spec(SPEC, project)
    targets = plan(spec, check_resources(spec, str(SPEC), project)).targets
    rows = [
        ("python -c pass (interpreter floor)", wall([sys.executable, "-c", "pass"], project, args.repeat)),
        ("dihal validate specs/quickstart.yaml", wall([*dihal, "validate", str(SPEC)], ROOT, args.repeat)),
        (
            "dvc status <quickstart stages> (the floor)",
            wall([sys.executable, "-m", "dvc", "status", *targets], project, args.repeat),
        ),
        (
            "dihal run specs/quickstart.yaml --no-report (warm)",
            wall([*dihal, "run", str(SPEC), "--project", str(project), "--no-report"], project, args.repeat),
        ),
        (
            "dihal run specs/quickstart.yaml (warm, with report)",
            wall([*dihal, "run", str(SPEC), "--project", str(project)], project, args.repeat),
        ),
    ]
    print(f"best of {args.repeat}, fresh processes; {os.cpu_count()} CPUs; project {project}")
    for label, seconds in rows:
        print(f"  {label:<52} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
