"""Loading a spec for a command: `extends:` and `-S` overrides applied, paths resolved, checked, hashed;
and compiling it into the project. A refused spec is printed with every problem and exits 2."""

from __future__ import annotations

from pathlib import Path

from dihal.cli.common import fail_spec, project_state
from dihal.spec.errors import SpecError


def checked(spec_path: Path, project: Path, notes: list[str] | None, overrides: list[str] | None):
    """The spec (its `extends:`, `-S` overrides and relative paths resolved), checked, its depth and hash; raises
    SpecError."""
    from dihal.compile.preflight import check_resources
    from dihal.spec.hashing import project_spec_hash
    from dihal.spec.paths import load_project_spec

    spec, _ = load_project_spec(spec_path, project, overrides)
    depth = check_resources(spec, str(spec_path), project, notes)
    return spec, depth, project_spec_hash(spec, project)


def load_checked(spec_path: Path, project: Path, notes: list[str] | None = None, overrides: list[str] | None = None):
    """`checked`, or a refused spec printed with every problem and exit 2."""
    try:
        return checked(spec_path, project, notes, overrides)
    except SpecError as e:
        fail_spec(e)


def variants(overrides: list[str] | None, multirun: bool) -> list[list[str]]:
    """The override sets a command runs once each (`-m` expands comma-swept values); a malformed one exits 2."""
    from dihal.spec.overrides import expand, parse

    try:
        sets = expand(overrides or [], multirun)
        for o in {o for found in sets for o in found}:
            parse(o)
        return sets
    except SpecError as e:
        fail_spec(e)


def compile_one(spec_path: Path, project: Path, sets: list[str]):
    """The spec and its plan, its stages written into the project's dvc.yaml under the registry lock."""
    from filelock import FileLock

    from dihal.compile.plan import compile_spec
    from dihal.execute.runner import ensure_project

    spec, depth, _ = load_checked(spec_path, project, None, sets)
    with project_state():
        ensure_project(project)
        with FileLock(str(project / ".dihal" / "dvc.yaml.lock")):  # as `dihal run` does: one registry writer
            return spec, compile_spec(spec, project, depth)
