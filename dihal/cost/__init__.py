"""`dihal plan`: what a spec will cost before anything runs -- tokens, FLOPs, memory, disk and wall time per
compiled stage, from the backbone's config alone (no weights are loaded, no network is used).

Everything here is an estimate: FLOPs by the usual 2·params·tokens (forward) and 6·params·tokens (training)
rules plus attention, wall time from a sustained throughput that is stated with its source (a GPU's datasheet
peak × a utilisation, or this machine's measured matmul rate). The schedule with N workers is a list schedule
over the stage graph (critical path first), not total / N.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dihal.cost.backbone import KNOWN, CostError, Shape, backbone_shape
from dihal.cost.machine import (
    GPU_UTILISATION,
    GPUS,
    Machine,
    critical_path,
    gpu,
    gpu_for,
    schedule,
    this_machine,
)
from dihal.cost.stages import StageCost, denoiser_params

__all__ = ["GPUS", "KNOWN", "CostError", "Estimate", "denoiser_params", "estimate"]


@dataclass
class Estimate:
    spec_name: str
    shape: Shape
    dtype: str
    machine: Machine
    workers: int
    stages: list[StageCost]
    serial_s: float
    parallel_s: float
    critical_s: float
    sweep: dict | None = None  # the same spec swept over every candidate layer (when it is not one already)
    assumptions: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.stages)

    @property
    def disk_bytes(self) -> float:
        return sum(s.disk_bytes for s in self.stages)

    @property
    def peak_bytes(self) -> float:
        return max((s.peak_bytes for s in self.stages), default=0.0)

    def as_dict(self) -> dict:
        return {
            "spec": self.spec_name,
            "backbone": {
                **self.shape.as_dict(),
                "dtype": self.dtype,
                "weights_bytes": self.shape.params * _nbytes(self.dtype),
            },
            "machine": {
                "name": self.machine.name,
                "flops_per_s": self.machine.flops,
                "throughput_source": self.machine.source,
            },
            "workers": self.workers,
            "stages": [s.as_dict() for s in self.stages],
            "total": {
                "flops": self.flops,
                "serial_s": self.serial_s,
                "workers_s": self.parallel_s,
                "critical_path_s": self.critical_s,
                "disk_bytes": self.disk_bytes,
                "peak_bytes": self.peak_bytes,
            },
            "sweep": self.sweep,
            "assumptions": self.assumptions,
        }


def _nbytes(dtype: str) -> int:
    from dihal.cost.backbone import BYTES

    return BYTES[dtype]


def _cost(spec, shape: Shape, machine: Machine, root: Path) -> list[StageCost]:
    from dihal.compile.plan import stage_graph
    from dihal.cost.stages import Coster

    p = stage_graph(spec, shape.layers)
    geo_layers = spec.geometry.layers or tuple(range(1, shape.layers))
    coster = Coster(spec, shape, list(geo_layers))
    costs = [coster.stage(st) for st in p.stages]
    for c in costs:
        c.seconds = machine.seconds(c.flops, c.bw_bytes, c.load_bytes, c.kind)
    return costs


def _totals(costs: list[StageCost], workers: int) -> tuple[float, float, float]:
    durations = {c.name: c.seconds for c in costs}
    deps = {c.name: c.deps & set(durations) for c in costs}
    return sum(durations.values()), schedule(durations, deps, workers), critical_path(durations, deps)


def estimate(
    spec, root: Path | str = ".", gpu_kind: str | None = None, workers: int = 1, utilisation: float | None = None
) -> Estimate:
    """Cost `spec` (paths already resolved against `root`) on `gpu_kind` (a key of GPUS), on this machine's CPU
    (`"cpu"`), or, when None, where the spec's backbone.device says (`dihal.cost.machine.gpu_for`)."""
    from dihal.spec.paths import at_root

    root = Path(root)
    shape = backbone_shape(at_root(spec.backbone, root))
    why_gpu = ""
    if gpu_kind is None:
        gpu_kind, why_gpu = gpu_for(spec.backbone.device)
    if gpu_kind and gpu_kind != "cpu":
        machine = gpu(gpu_kind, GPU_UTILISATION if utilisation is None else utilisation)
    else:
        machine = this_machine(root, utilisation)
    costs = _cost(spec, shape, machine, root)
    serial, parallel, critical = _totals(costs, workers)
    est = Estimate(spec.name, shape, spec.backbone.dtype, machine, workers, costs, serial, parallel, critical)
    est.sweep = _sweep(spec, shape, machine, root, workers, costs)
    est.assumptions = _assumptions(est, spec) + ([why_gpu] if why_gpu else [])
    return est


def _sweep(spec, shape: Shape, machine: Machine, root: Path, workers: int, costs: list[StageCost]) -> dict | None:
    """The spec's bridge trained at every candidate layer (its own layers when it is a sweep already)."""
    if spec.bridge is None:
        return None
    if spec.is_sweep:
        layers, swept = list(spec.bridge.layers), costs
    else:
        layers = list(spec.geometry.layers or range(1, shape.layers))
        if len(layers) < 3:
            return None
        sweep = spec.model_copy(update={"bridge": spec.bridge.model_copy(update={"layers": tuple(layers)})})
        swept = _cost(sweep, shape, machine, root)
    serial, parallel, critical = _totals(swept, workers)
    per = [c for c in swept if c.kind in ("train", "evaluate") and "C3" not in c.note]
    return {
        "layers": layers,
        "seeds": list(spec.bridge_seeds),
        "stages": len(swept),
        "train_evaluate_stages": len(per),
        "flops": sum(c.flops for c in swept),
        "serial_s": serial,
        "workers_s": parallel,
        "critical_path_s": critical,
        "is_this_spec": spec.is_sweep,
    }


def _assumptions(est: Estimate, spec) -> list[str]:
    from dihal.cost.machine import ACT_FACTOR_NOTE, BACKBONE_START_S, LIGHT_START_S, LOAD_GBS, START_S

    out = [
        "These are estimates, not measurements.",
        f"Backbone config: {est.shape.source}.",
        f"Throughput: {est.machine.source}.",
        "FLOPs: 2·params·tokens per forward through the backbone slice (+ causal attention), 6·params·tokens "
        "to train the denoiser (+ attention); kNN/covariance/eigendecomposition counted for score.",
        f"Every stage starts in {START_S:g} s (a fresh process importing torch; summary, which imports none, in "
        f"{LIGHT_START_S['summary']:g} s); one that loads the backbone "
        f"adds {BACKBONE_START_S:g} s (transformers' model code) and reads its weights at {LOAD_GBS:g} GB/s.",
        ACT_FACTOR_NOTE,
        f"--workers {est.workers}: list schedule over the stage graph (critical path first) on identical "
        f"workers; critical path alone {est.critical_s:.0f} s.",
    ]
    if spec.bridge is not None and spec.bridge.layers == "selected":
        out.append(
            "bridge.layers is 'selected': ℓ* is unknown before score runs, so targets are costed at the "
            "deepest candidate layer (an upper bound) and evaluate's upper blocks as the whole backbone."
        )
    if est.machine.memory and est.peak_bytes > est.machine.memory:
        out.append(
            f"WARNING: the largest stage needs ~{est.peak_bytes / 1e9:.0f} GB, more than the "
            f"{est.machine.memory / 1e9:.0f} GB of a {est.machine.name}."
        )
    return out
