"""dihal from Python (a notebook): run a spec, read the results as DataFrames.

The same code paths as the command line -- `dihal.run` is `dihal run`, `dihal.results` reads a snapshot of
the ledger as `dihal ledger sql` does -- so a notebook sees exactly what the CLI sees, and holding results
open in a notebook never blocks a run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml


def run(spec: str | os.PathLike | Mapping, overrides: list[str] | None = None, project: str | os.PathLike = "."):
    """Run a spec (a YAML path, or a mapping whose relative paths are relative to `project`) with optional
    `-S`-style overrides; returns the run's RunResult (run_id, spec_hash, stages run, report path).

    Raises dihal.spec.errors.SpecError for a bad spec (nothing computed) and
    dihal.execute.runner.RunFailed when a stage fails (recorded in the ledger)."""
    from dihal.execute.runner import run_spec

    root = Path(project)
    if isinstance(spec, Mapping):
        root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".dihal-inline-", suffix=".yaml", dir=root)
        try:
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(dict(spec), f, sort_keys=False)
            return run_spec(name, root, overrides=overrides, echo=False)
        finally:
            Path(name).unlink(missing_ok=True)
    return run_spec(spec, root, overrides=overrides, echo=False)


def results(table: str | None = None, project: str | os.PathLike = "."):
    """One ledger table as a pandas DataFrame, or every table as {name: DataFrame} when `table` is None.
    Each call reads a fresh snapshot of the ledger."""
    from dihal.ledger.export import frames

    got = frames(project, [table] if table else None)
    return got[table] if table else got
