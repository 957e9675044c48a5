"""Where users wait on dihal itself rather than on compute: `dihal validate`, and a warm `dihal run`.

Prints wall times (best of --repeat, each a fresh process, as a user would start it) for:
- `python -c pass`, the interpreter's own floor;
- `dihal validate specs/quickstart.yaml` (target < 0.5 s: it imports neither torch nor transformers);
- `dvc status` of the quickstart's stages alone, the floor of any warm run (DVC hashes every dep and out);
- a warm `dihal run specs/quickstart.yaml --no-report` and a warm `dihal run specs/quickstart.yaml`
  (target < 2.5 s): nothing to compute; validate, compile, `dvc repro`, ingest, ledger write, summary
  (and the HTML report for the second).

The warm runs need a project where the spec has run under this code; `--project DIR` (default: a scratch
project under the system temp dir, reused between invocations) is brought there first with one unmeasured
run (the quickstart's ~7 minutes on 2 cores when cold, or only the stages that edited code renamed). `--tiny` measures the same on the tiny random Llama of
tests/tiny.py instead (its 8 stages, a cold run of about a minute): what dihal adds around DVC is per stage,
not per FLOP.

`--cold` measures instead what a stage's start costs: cold runs of the tiny spec with every stage a fresh process
(`DIHAL_ZYGOTE=0`, torch and transformers imported each time) and forked from `dihal run`'s warm process.

    .venv/bin/python -m bench.startup [--project DIR] [--repeat 3] [--tiny | --cold]
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


def wall(cmd: list[str], cwd: Path, repeat: int, before=None, **extra_env: str) -> float:
    """Best wall time of `repeat` fresh processes (the least disturbed by other work on the machine); `before()`
    runs, unmeasured, ahead of each."""
    best = float("inf")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DIHAL_PROGRESS": "0", **extra_env}
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        took = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        best = min(best, took)
    return best


def cold_tiny(repeat: int) -> None:
    """A cold `dihal run` of the tiny spec (8 stages, a new project each time), its stages forked from one warm
    process (the default, `dihal.execute.zygote`) and each a fresh process (`DIHAL_ZYGOTE=0`)."""
    import shutil

    sys.path.insert(0, str(ROOT))
    from tests.tiny import TINY, save_tiny, write_spec_from

    base = Path(tempfile.mkdtemp(prefix="dihal-bench-cold-"))
    save_tiny(base / "tiny-model")
    project = base / "p"

    def fresh_project() -> None:
        shutil.rmtree(project, ignore_errors=True)
        project.mkdir()
        shutil.copytree(base / "tiny-model", project / "tiny")
        write_spec_from(TINY, project, "tiny")

    cmd = [str(BIN / "dihal"), "run", "tiny.yaml", "--no-report"]
    times = {z: wall(cmd, project, repeat, before=fresh_project, DIHAL_ZYGOTE=z) for z in ("0", "1")}
    shutil.rmtree(base, ignore_errors=True)
    print(f"cold tiny run (8 stages), best of {repeat}; {os.cpu_count()} CPUs")
    print(f"  every stage a fresh process (DIHAL_ZYGOTE=0)      {times['0']:6.2f} s")
    print(
        f"  stages forked from one warm process (default)     {times['1']:6.2f} s  ({times['0'] / times['1']:.2f}× faster)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path(tempfile.gettempdir()) / "dihal-bench-startup")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="the tiny random Llama's spec instead of the quickstart")
    ap.add_argument("--cold", action="store_true", help="cold tiny runs, stages forked or fresh, instead")
    args = ap.parse_args()
    if args.cold:
        cold_tiny(args.repeat)
        return
    project = args.project.resolve()
    dihal = [str(BIN / "dihal")]
    spec_file = SPEC
    if args.tiny:
        if args.project == ap.get_default("project"):
            project = project.with_name(project.name + "-tiny")
        sys.path.insert(0, str(ROOT))
        from tests.tiny import TINY, save_tiny, write_spec_from

        project.mkdir(parents=True, exist_ok=True)
        if not (project / "tiny").exists():
            save_tiny(project / "tiny")
        spec_file = write_spec_from(TINY, project, "tiny")
    # one unmeasured run first: cold in a new project, and in a reused one it recomputes what edited code renamed
    print(f"bringing {project} up to date with one run of {spec_file.name} (minutes when cold) ...", flush=True)
    project.mkdir(parents=True, exist_ok=True)
    wall([*dihal, "run", str(spec_file), "--project", str(project)], project, 1)
    from dihal.compile.plan import plan
    from dihal.compile.preflight import check_resources
    from dihal.spec.paths import load_project_spec  # no torch: the same modules `dihal validate` uses

    spec, _ = load_project_spec(spec_file, project)
    targets = plan(spec, check_resources(spec, str(spec_file), project)).targets
    name = spec_file.name
    floor = wall([sys.executable, "-m", "dvc", "status", *targets], project, args.repeat)
    rows = [
        ("python -c pass (interpreter floor)", wall([sys.executable, "-c", "pass"], project, args.repeat)),
        (f"dihal validate {name}", wall([*dihal, "validate", str(spec_file)], project, args.repeat)),
        (f"dvc status <{name}'s repro targets> (the floor)", floor),
        (
            "dvc status (every stage of the project)",
            wall([sys.executable, "-m", "dvc", "status"], project, args.repeat),
        ),
        (
            f"dihal run {name} --no-report (warm)",
            wall([*dihal, "run", str(spec_file), "--project", str(project), "--no-report"], project, args.repeat),
        ),
        (
            f"dihal run {name} (warm, with report)",
            wall([*dihal, "run", str(spec_file), "--project", str(project)], project, args.repeat),
        ),
    ]
    print(f"best of {args.repeat}, fresh processes; {os.cpu_count()} CPUs; project {project}")
    for label, seconds in rows:
        print(f"  {label:<56} {seconds:6.2f} s" + (f"  ({seconds / floor:.1f}× the floor)" if "warm" in label else ""))


if __name__ == "__main__":
    main()
