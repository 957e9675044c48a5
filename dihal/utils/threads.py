"""How many threads a stage computes with: decided once, from what the stage was given.

Order: `DIHAL_THREADS` (the user's explicit choice); else the CPUs its executor granted
(`DIHAL_STAGE_CPUS`, which the Ray executor sets from the task's `num_cpus`, rounded up to one); else
torch's own default for the machine (its cores), so a local `dvc repro` computes exactly as before.
The OpenMP/BLAS variables go into the stage's environment before torch starts its pools
(`stage_env`, built on the worker, not the driver), and `torch.set_num_threads` runs in the stage
(`apply`). A float reduction can end in other last digits under another thread count, so the count
is recorded in every stage's manifest (`dihal.stages.manifest`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

ENV_THREADS = "DIHAL_THREADS"
ENV_CPUS = "DIHAL_STAGE_CPUS"
BLAS_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _explicit(environ: Mapping[str, str]) -> int | None:
    raw = environ.get(ENV_THREADS, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV_THREADS}={raw!r}: expected a whole number of threads, at least 1")
    return int(raw)


def _granted(cpus: float) -> int:
    return max(1, math.ceil(cpus))  # a task may hold 0 or 0.5 CPUs: it still computes on one thread


def requested(environ: Mapping[str, str] = os.environ) -> tuple[int | None, str]:
    """(threads, where the number came from); None threads = leave torch's default."""
    n = _explicit(environ)
    if n is not None:
        return n, ENV_THREADS
    cpus = environ.get(ENV_CPUS, "").strip()
    if cpus:
        try:
            return _granted(float(cpus)), "executor num_cpus"
        except ValueError:
            raise ValueError(f"{ENV_CPUS}={cpus!r}: expected a number of CPUs") from None
    return None, "torch default (the machine's cores)"


def stage_env(num_cpus: float, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables a stage granted `num_cpus` CPUs starts with (to merge into its environment)."""
    n = _explicit(environ) or _granted(num_cpus)
    return {ENV_CPUS: f"{num_cpus:g}", **{var: str(n) for var in BLAS_VARS}}


def apply() -> dict:
    """Set this process's torch threads as `requested` says; return what to record."""
    import torch

    n, why = requested()
    if n is not None:
        torch.set_num_threads(n)
    return {"threads": torch.get_num_threads(), "threads_from": why}
