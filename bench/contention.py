"""Bridge training beside a competing CPU-bound process: what spin-waiting costs, and which settings survive it.

Each case trains the quickstart-sized bridge (a default Denoiser on random 576-d states, batch 32, T 64) in a
fresh process, once alone and once beside a competitor: another process doing float32 matmuls with torch's
default threads, as a second dihal stage or any numeric job would. A fair share on a shared machine is half
the alone speed; far below it is OpenMP threads spinning against each other.

    .venv/bin/python -m bench.contention [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKER = """
import sys, time, torch
from dihal.utils.threads import apply
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.train import TrainConfig, train_denoiser
info = apply()
torch.manual_seed(0)
x0 = torch.randn(512, 64, 576)
den = Denoiser(d_in=576, max_len=64)
train_denoiser(den, x0, TrainConfig(steps=5, warmup=1, batch_size=32), progress=False)  # warm-up
steps = int(sys.argv[1])
t = time.perf_counter()
train_denoiser(den, x0, TrainConfig(steps=steps, warmup=1, batch_size=32), progress=False)
print(steps / (time.perf_counter() - t), info["threads"])
"""
COMPETITOR = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"
CASES = [
    ("torch default threads", {}),
    ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("GOMP_SPINCOUNT=10000", {"GOMP_SPINCOUNT": "10000"}),
    ("DIHAL_THREADS=1", {"DIHAL_THREADS": "1", "OMP_NUM_THREADS": "1"}),
]


def _train(steps: int, extra: dict) -> tuple[float, int]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "DIHAL_THREADS")
    }
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(steps)], env={**env, **extra}, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1])


def _beside_competitor(steps: int, extra: dict) -> tuple[float, int]:
    comp = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        time.sleep(2.0)  # the competitor's threads are up and spinning
        return _train(steps, extra)
    finally:
        comp.kill()
        comp.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    print(f"bridge training, {args.steps} steps per case, {os.cpu_count()} CPU(s)")
    print(f"{'case':<26} {'threads':>7} {'alone':>10} {'contended':>10} {'ratio':>6}")
    for label, extra in CASES:
        alone, threads = _train(args.steps, extra)
        shared, _ = _beside_competitor(args.steps, extra)
        print(f"{label:<26} {threads:>7} {alone:>7.2f}/s {shared:>7.2f}/s {shared / alone:>6.2f}")
    print("ratio: contended / alone steps per second (a fair share of a 2-way split is 0.50)")


if __name__ == "__main__":
    main()
