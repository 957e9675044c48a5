"""Where a run's stages are computed. Each executor takes the compiled plan and returns what
`dihal.execute.dvc.repro_waiting` returns -- `(exit code, output tail, names of the stages that ran)` -- so
the rest of `dihal.execute.runner.run_spec` (ingest, ledger, report) is the same whichever ran them.

- `local` (default): `dvc repro` on the plan's targets, one stage at a time (`dihal.execute.executors.local`).
- `ray`: the stages DVC finds changed, as Ray tasks, concurrently where the DAG allows; each is
  `dvc commit`ted as it completes, so DVC stays the record (`dihal.execute.executors.ray`). Ray is optional
  and imported only here, only when this executor is chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

NAMES = ("local", "ray")


class ExecutorUnavailable(RuntimeError):
    """The executor cannot be used here (Ray not installed)."""


class Executor(Protocol):
    name: str

    def run(self, plan, root: Path, *, spec=None, echo=None) -> tuple[int, str, list[str]]: ...


def get(name: str = "local", **options) -> Executor:
    """The executor called `name`, with its options (ray: address, retries, num_cpus)."""
    if name == "local":
        from dihal.execute.executors.local import LocalExecutor

        return LocalExecutor(**options)
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise ExecutorUnavailable(
                f'--executor ray needs Ray, which is not installed ({e}): pip install "dihal[ray]"'
            ) from None
        from dihal.execute.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r}: expected one of {', '.join(NAMES)}")


def resolve(executor) -> Executor:
    """`run_spec`'s `executor` argument: a name or an executor object."""
    return get(executor) if isinstance(executor, str) or executor is None else executor
