"""`dihal plan` against the clock: every compiled stage of a spec run once, as DVC runs it, beside its estimate.

Each stage is started the way `dvc repro` starts it (`dihal stage <config>` in a fresh process, in the
pipeline's order) and timed from process start to exit, so interpreter start, imports and the model load
count, as they do for a user. Prints estimate, measured and their ratio per stage and in total; the
planner's target is a ratio within [0.5, 2] for every stage that takes more than a few seconds.

    .venv/bin/python -m bench.plan specs/quickstart.yaml [--project DIR] [-S key=value ...]

`--project` (default: a scratch project under the system temp dir, one per spec) is where the stages
write; outputs already there are recomputed, not reused. Run it on an otherwise idle machine: the
estimate assumes the cores are the stage's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    from dihal.execute.dvc import env

    return {**env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DIHAL_PROGRESS": "0"}


def _stages(project: Path, name: str) -> dict[str, dict]:
    """The spec's registered stages (name -> dvc.yaml entry), in the order compile wrote them (topological)."""
    for p in (project / ".dihal" / "specs").glob("*.json"):
        reg = json.loads(p.read_text())
        if reg["name"] == name:
            return reg["stages"]
    raise SystemExit(f"{name} is not registered in {project}: did `dihal compile` fail?")


def _run(entry: dict, project: Path) -> float:
    for out in entry.get("outs", []):
        shutil.rmtree(project / out, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run(entry["cmd"].split(), cwd=project, env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{entry['cmd']} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return took


def _fmt(seconds: float) -> str:
    return f"{seconds:7.1f} s" if seconds < 120 else f"{seconds / 60:7.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--project", type=Path, default=None)
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    ap.add_argument("--gflops", type=float, default=None, help="the matmul rate to plan with (default: measured)")
    args = ap.parse_args()
    from dihal.cost import estimate
    from dihal.spec.paths import load_project_spec

    spec_path = args.spec.resolve()
    project = (args.project or Path(tempfile.gettempdir()) / f"dihal-bench-plan-{spec_path.stem}").resolve()
    project.mkdir(parents=True, exist_ok=True)
    sets = [a for o in args.overrides for a in ("-S", o)]
    proc = subprocess.run(
        [str(BIN / "dihal"), "compile", str(spec_path), "-C", str(project), *sets],
        env=_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"dihal compile failed:\n{proc.stdout}{proc.stderr}")
    spec, _ = load_project_spec(spec_path, project, args.overrides)
    # The planner reads a rate from bench/throughput.json when the project has one: give it a steady one (the best
    # of a few seconds of matmuls, or --gflops) rather than the 0.2 s sample `dihal plan` takes, which a burst of
    # other work on the machine can cut tenfold.
    from dihal.cost.machine import BENCH_FILE, measure_gflops

    gflops = args.gflops or measure_gflops(budget_s=5.0)
    (project / BENCH_FILE).parent.mkdir(parents=True, exist_ok=True)
    (project / BENCH_FILE).write_text(json.dumps({"cpu_gflops": gflops, "source": "bench.plan: best of 5 s"}))
    planned = estimate(spec, project)
    est = {s.name: s for s in planned.stages}
    print(f"{spec.name}: {os.cpu_count()} CPUs; matmul {gflops:.1f} GFLOP/s; project {project}")
    print(f"throughput: {planned.machine.source}")
    print(f"  {'stage':<28} {'estimate':>11} {'measured':>11} {'est/meas':>9}")
    tot_e = tot_m = 0.0
    for name, entry in _stages(project, spec.name).items():
        measured = _run(entry, project)
        e = est[name].seconds if name in est else float("nan")
        tot_e, tot_m = tot_e + e, tot_m + measured
        print(f"  {name:<28} {_fmt(e)} {_fmt(measured)} {e / measured:9.2f}", flush=True)
    print(f"  {'total (serial)':<28} {_fmt(tot_e)} {_fmt(tot_m)} {tot_e / tot_m:9.2f}")


if __name__ == "__main__":
    main()
