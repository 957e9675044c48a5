"""Reading the files dihal keeps in a project, with errors that name the file and the fix.

A project holds state dihal wrote and a person may have touched since: the spec registry
(`.dihal/specs/*.json`), `dvc.yaml`, the ledger's queue and logs. A truncated or hand-edited file must
not end a command in a `JSONDecodeError` that names no file; it gets a ProjectStateError that says which
file, what is wrong with it, and what to do. The CLI prints it and exits with EXIT_STATE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

EXIT_STATE = 65  # EX_DATAERR (sysexits.h): a file dihal keeps in the project is damaged or cannot be written


class ProjectStateError(Exception):
    """A project file is damaged, of the wrong shape, or cannot be written; the message names it and the fix."""


def read_json(path: Path, fix: str, *, kind: type = dict) -> Any:
    """The JSON document in `path`, which must be a `kind`; any other content is a ProjectStateError."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ProjectStateError(f"{path} cannot be read ({_why(err)}): {fix}") from None
    if not isinstance(doc, kind):
        raise ProjectStateError(f"{path} holds a {type(doc).__name__}, not a JSON {kind.__name__}: {fix}")
    return doc


def read_yaml(path: Path, fix: str) -> dict:
    """The YAML mapping in `path` ({} when the file is absent or empty); anything else is a ProjectStateError."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ProjectStateError(f"{path} cannot be read ({_why(err)}): {fix}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ProjectStateError(f"{path} holds a YAML {type(doc).__name__}, not a mapping: {fix}")
    return doc


def unwritable(root: Path, err: OSError) -> ProjectStateError:
    """The error for a project folder dihal cannot write (read-only filesystem, no permission)."""
    return ProjectStateError(
        f"cannot write to the project folder {Path(root).resolve()} ({err.strerror or err}): dihal keeps its stages, "
        "artifacts, ledger and reports there; run from a writable folder or pick one with --project/-C"
    )


def _why(err: BaseException) -> str:
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        return f"{err.problem} at line {err.problem_mark.line + 1}, column {err.problem_mark.column + 1}"
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at line {err.lineno}, column {err.colno}"
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return f"{type(err).__name__}: {err}"
