"""`dihal run --executor local` (dvc repro, one stage at a time) vs `--executor ray` (2 CPUs, local cluster).

Prints, each in a fresh temp project with the tiny random Llama of tests/tiny.py:
- wall time of the tiny sweep (layers 1-3 x seeds 0-1: 21 stages) under each executor, and their ratio;
- N-worker scaling, simulated on one machine: the same sweep on a local Ray cluster of 1 CPU and of 2 CPUs
  (each stage a 1-CPU task with 1 thread, so 1 or 2 stages at once); the speed-up is their wall ratio;
- for the Ray run, the sum of in-worker stage times (what ran concurrently) against its wall time;
- the per-stage overhead floor of each executor on a trivial stage (`python -c pass`):
  local = `dvc repro -f` of that one stage; ray = a Ray task running it as a subprocess + `dvc commit --force`.

    .venv/bin/python -m bench.executors [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tiny import TINY_SWEEP as BASE  # noqa: E402
from tests.tiny import save_tiny, write_spec_from  # noqa: E402


def env(cpus: int = 2) -> dict:
    e = dict(
        os.environ,
        DIHAL_PROGRESS="0",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DIHAL_RAY_NUM_CPUS=str(cpus),
        DVC_NO_ANALYTICS="1",
    )
    e.pop("RAY_ADDRESS", None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DIHAL_THREADS"):
        e.pop(var, None)  # local stages use the machine's cores, Ray's the CPUs of their task (dihal.utils.threads)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    return e


def sweep(executor: str, tmp: Path, cpus: int = 2) -> tuple[float, str]:
    """Wall seconds of the tiny sweep in a fresh project; under Ray, a local cluster of `cpus` CPUs, so `cpus`
    stages (1 CPU and 1 thread each) run at once: `cpus` workers simulated on one machine."""
    root = tmp / f"{executor}-{cpus}"
    root.mkdir()
    save_tiny(root / "tiny")
    spec = write_spec_from(BASE, root, "sweep")
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dihal",
            "run",
            str(spec),
            "--no-report",
            "--project",
            str(root),
            "--executor",
            executor,
        ],
        cwd=root,
        env=env(cpus),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{executor} run failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def dvc(args: list[str], root: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env(), check=True, capture_output=True)


def trivial(tmp: Path, repeat: int) -> tuple[float, float, float]:
    """Best-of-`repeat` seconds per trivial stage: local (`dvc repro -f`), ray (task + dvc commit), ray.init."""
    import ray

    root = tmp / "trivial"
    root.mkdir()
    dvc(["init", "--no-scm", "-q"], root)
    (root / "dvc.yaml").write_text(
        f"stages:\n  noop:\n    cmd: {sys.executable} -c \"open('out.txt','w').write('x')\"\n    outs: [out.txt]\n"
    )
    dvc(["repro", "-q"], root)
    local = []
    for _ in range(repeat):
        t = time.perf_counter()
        dvc(["repro", "-f", "-q", "noop"], root)
        local.append(time.perf_counter() - t)

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    start = time.perf_counter() - t

    @ray.remote(num_cpus=1)
    def task(cwd: str) -> None:
        subprocess.run([sys.executable, "-c", "open('out.txt','w').write('x')"], cwd=cwd, check=True)

    ray.get(task.remote(str(root)))  # a warm worker, as within a run
    remote = []
    for _ in range(repeat):
        t = time.perf_counter()
        ray.get(task.remote(str(root)))
        dvc(["commit", "--force", "-q", "noop"], root)
        remote.append(time.perf_counter() - t)
    ray.shutdown()
    return min(local), min(remote), start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dihal-bench-exec-") as d:
        tmp = Path(d)
        local_wall, _ = sweep("local", tmp)
        ray_wall, out = sweep("ray", tmp)
        one_wall, _ = sweep("ray", tmp, cpus=1)
        stage_s = [float(x) for x in re.findall(r"\(stage ([\d.]+) s\)", out)]
        n = len(re.findall(r"Running stage '", out))
        print(
            f"tiny sweep ({n} stages), wall: local {local_wall:.1f} s, ray (2 CPUs) {ray_wall:.1f} s, "
            f"ray/local time {ray_wall / local_wall:.2f}, so Ray runs at {local_wall / ray_wall:.2f}x local's speed"
        )
        print(
            f"ray, 1 worker (1 CPU) {one_wall:.1f} s against 2 workers (2 CPUs) {ray_wall:.1f} s: "
            f"{one_wall / ray_wall:.2f}x on 2 workers (ideal 2.00; {os.cpu_count()} cores here)"
        )
        print(
            f"ray run: sum of in-worker stage times {sum(stage_s):.1f} s over {len(stage_s)} stages; "
            f"wall - sum = {ray_wall - sum(stage_s):.1f} s"
        )
        lo, rt, start = trivial(tmp, args.repeat)
        print(
            f"trivial stage, best of {args.repeat}: local (dvc repro -f) {lo:.2f} s, "
            f"ray (task + dvc commit) {rt:.2f} s, ratio {rt / lo:.2f}; ray.init of a local cluster {start:.1f} s"
        )


if __name__ == "__main__":
    main()
