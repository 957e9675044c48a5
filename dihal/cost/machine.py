"""Throughput (a named GPU class from its datasheet, or this machine measured) and the stage schedule."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

# Dense (no sparsity) bf16 tensor-core peak and memory bandwidth, from NVIDIA's datasheets:
# H100 SXM5 80GB (nvidia.com/en-us/data-center/h100: 1,979 TFLOPS with sparsity -> 989 dense; 3.35 TB/s),
# A100 SXM4 80GB (nvidia.com/en-us/data-center/a100: 312 TFLOPS dense; 2,039 GB/s),
# L4 24GB (nvidia.com/en-us/data-center/l4: 242 TFLOPS with sparsity -> 121 dense; 300 GB/s).
GPUS: dict[str, dict] = {
    "h100": {"name": "H100 SXM 80GB", "tflops": 989.0, "bandwidth_gbs": 3350.0, "memory_gb": 80.0},
    "a100": {"name": "A100 SXM 80GB", "tflops": 312.0, "bandwidth_gbs": 2039.0, "memory_gb": 80.0},
    "l4": {"name": "L4 24GB", "tflops": 121.0, "bandwidth_gbs": 300.0, "memory_gb": 24.0},
}
GPU_UTILISATION = 0.40  # share of peak a stage sustains (MFU); small denoisers and kNN reach less, large GEMMs more
CPU_EFFICIENCY = 0.50  # share of a bare matmul's measured rate the backbone's forward passes sustain on a CPU
# What the other kinds sustain on a CPU, relative to CPU_EFFICIENCY, measured with bench/plan.py on the embedded
# backbone (2 cores): the denoiser's small GEMMs and backward (train), short decodes at batch ≤ 32 (evaluate,
# reference), and float64 geometry with kNN selection and sorting (score). Fitted once, stated in the plan.
# frontier runs evaluate's sampling and judge at each point, so it takes evaluate's factor (not measured itself).
CPU_KIND_FACTOR: dict[str, float] = {"train": 0.7, "evaluate": 0.5, "frontier": 0.5, "reference": 0.4, "score": 0.4}
LOAD_GBS = 2.0  # weights read from disk / page cache per backbone-loading stage, GB/s
# Seconds every stage process spends before its first FLOP (interpreter, torch and dihal imports), and the
# extra a backbone-loading stage spends importing transformers' model code and building the model; measured
# on this 2-core machine (bench/plan.py), not scaled to other machines.
START_S = 2.0
BACKBONE_START_S = 3.5
LIGHT_START_S = {"summary": 0.4}  # kinds whose process imports no torch
BENCH_FILE = Path("bench") / "throughput.json"  # optional: {"cpu_gflops": <float>, "source": "..."}


@dataclass(frozen=True)
class Machine:
    name: str
    flops: float  # sustained FLOP/s assumed for every stage
    bandwidth: float | None  # bytes/s for memory-bound decoding; None = not modelled
    memory: float | None  # device memory, bytes
    source: str  # how `flops` was obtained
    kind_factor: tuple[tuple[str, float], ...] = ()  # a stage kind's sustained rate = flops × factor (default 1)

    def seconds(self, flops: float, bw_bytes: float = 0.0, load_bytes: float = 0.0, kind: str = "") -> float:
        compute = flops / (self.flops * dict(self.kind_factor).get(kind, 1.0))
        memory = bw_bytes / self.bandwidth if self.bandwidth and bw_bytes else 0.0
        start = LIGHT_START_S.get(kind, START_S) + (BACKBONE_START_S if load_bytes else 0.0)
        return start + max(compute, memory) + load_bytes / (LOAD_GBS * 1e9)


def gpu(kind: str, utilisation: float = GPU_UTILISATION) -> Machine:
    g = GPUS[kind]
    return Machine(
        g["name"],
        g["tflops"] * 1e12 * utilisation,
        g["bandwidth_gbs"] * 1e9 * utilisation,
        g["memory_gb"] * 1e9,
        f"{g['name']}: {g['tflops']:g} TFLOP/s dense bf16 peak × {utilisation:.0%} utilisation; "
        f"{g['bandwidth_gbs']:g} GB/s × {utilisation:.0%} for KV-cache decoding (NVIDIA datasheet)",
    )


DEFAULT_GPU = "h100"


def gpu_for(device: str) -> tuple[str | None, str]:
    """The GPU class to cost a spec on when none is named: a spec whose backbone runs on `cuda` is costed on
    this machine's GPU when nvidia-smi names a known class, else on DEFAULT_GPU; any other device on the CPU.
    Returns (GPUS key or None, why)."""
    if not device.startswith("cuda"):
        return None, ""
    import shutil
    import subprocess

    names = ""
    if shutil.which("nvidia-smi"):
        try:
            names = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
            ).stdout.lower()
        except (OSError, subprocess.SubprocessError):
            names = ""
    for key in GPUS:
        if key in names:
            return key, f"backbone.device is {device}: costed on this machine's {GPUS[key]['name']} (nvidia-smi)"
    return DEFAULT_GPU, (
        f"backbone.device is {device} and no known GPU is visible here: costed on an {GPUS[DEFAULT_GPU]['name']} "
        "(--gpu chooses another)"
    )


def this_machine(root: Path | str = ".", efficiency: float | None = None) -> Machine:
    """bench/throughput.json when present, else a ~0.2 s float32 matmul benchmark (numpy), × CPU_EFFICIENCY and
    each kind's CPU_KIND_FACTOR; an explicit `efficiency` applies to every kind alike."""
    path = Path(root) / BENCH_FILE
    try:
        saved = json.loads(path.read_text())
        gflops, how = float(saved["cpu_gflops"]), f"read from {path} ({saved.get('source', 'no source given')})"
    except (OSError, ValueError, KeyError, TypeError):
        gflops = measure_gflops()
        threads = os.environ.get("OMP_NUM_THREADS", "BLAS default")
        how = f"measured now: float32 matmul 512³, {gflops:.1f} GFLOP/s (threads: {threads})"
    if efficiency is not None:
        return Machine("this machine (CPU)", gflops * 1e9 * efficiency, None, None, f"{how} × {efficiency:.0%}")
    factors = ", ".join(f"{k} {CPU_EFFICIENCY * f:.0%}" for k, f in CPU_KIND_FACTOR.items())
    return Machine(
        "this machine (CPU)",
        gflops * 1e9 * CPU_EFFICIENCY,
        None,
        None,
        f"{how} × {CPU_EFFICIENCY:.0%} for backbone passes ({factors}; calibrated on the quickstart's stages, "
        "bench/plan.py)",
        tuple(CPU_KIND_FACTOR.items()),
    )


def measure_gflops(n: int = 512, budget_s: float = 0.2) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def schedule(durations: dict[str, float], deps: dict[str, set[str]], workers: int) -> float:
    """Makespan of a list schedule on `workers` identical workers: whenever a worker is free it takes the ready
    stage with the longest remaining path to the end (critical path first). Never below the critical path or
    the longest stage, never above the serial sum."""
    order = list(durations)
    below: dict[str, float] = {}
    users: dict[str, set[str]] = {k: set() for k in order}
    for k, ds in deps.items():
        for d in ds:
            users[d].add(k)
    for k in reversed(order):  # `order` is topological (the plan's order)
        below[k] = durations[k] + max((below[u] for u in users[k]), default=0.0)
    done_at: dict[str, float] = {}
    free = [0.0] * max(1, workers)
    left = set(order)
    now = 0.0
    while left:
        ready = [k for k in left if all(d in done_at and done_at[d] <= now for d in deps.get(k, ()))]
        ready.sort(key=lambda k: -below[k])
        idle = [i for i, t in enumerate(free) if t <= now]
        for i, k in zip(idle, ready):
            free[i] = done_at[k] = now + durations[k]
            left.discard(k)
        later = [t for t in free if t > now] + [done_at[k] for k in done_at if done_at[k] > now]
        if not later:
            if left and not ready:
                raise ValueError("the stage graph has a cycle")
            continue
        now = min(later)
    return max(done_at.values(), default=0.0)


def critical_path(durations: dict[str, float], deps: dict[str, set[str]]) -> float:
    finish: dict[str, float] = {}
    for k in durations:
        finish[k] = durations[k] + max((finish[d] for d in deps.get(k, ())), default=0.0)
    return max(finish.values(), default=0.0)


ACT_FACTOR_NOTE = (
    "Peak memory: weights at the spec's dtype + activations ≈ batch·seq·(6·d + 2·intermediate) "
    "+ one attention map; the denoiser's training state at 16 bytes/param (fp32 + AdamW); "
    "disk: stored states at 4 bytes per value."
)
