"""The default executor: `dvc repro` on the plan's targets, waiting out other runs that hold a shared stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class LocalExecutor:
    name: str = "local"

    def run(self, plan, root: Path, *, spec=None, echo=None) -> tuple[int, str, list[str]]:
        from dihal.execute import dvc  # looked up per call: tests patch dvc.repro_waiting

        return dvc.repro_waiting(plan.targets, root, echo=echo)
