"""Which specs a project keeps, and a `dvc.yaml` that is exactly their stages.

A bare `dvc repro` should run exactly the specs a project keeps, not every spec ever compiled. So a
project registers specs by name in `.dihal/specs/<name>.json`
(the spec hash and the DVC entry of each of its stages), and `dvc.yaml` is regenerated on every
compile as the union of the registered specs' stages, plus any stage the user wrote by hand (a
stage whose command is not `dihal stage …` is never touched). The entries are stored, not
re-planned, so compiling spec B never changes spec A's stages — even after dihal's code changed,
A keeps the stages its outputs came from until A itself is compiled again.

Re-compiling a spec under the same name replaces its registration: the stages only the old
version had leave `dvc.yaml` at once (their artifacts stay until `dihal gc`). Stages no
registration ever named (a `dvc.yaml` from before the registry) stay until `dihal gc`.

`dihal gc` unregisters the specs not kept, drops every dihal stage no registered spec names from
`dvc.yaml` and `dvc.lock`, deletes their `artifacts/<kind>/<hash>` directories, checkpoints, DVC
metrics and plot files and `.dihal/stages` configs, and runs `dvc gc -w -f` so DVC's cache forgets them too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dihal.spec.errors import SpecError
from dihal.spec.hashing import digest
from dihal.spec.kinds import KINDS
from dihal.spec.reader import read_yaml as read_spec_yaml
from dihal.utils.atomic import write_atomic
from dihal.utils.state import ProjectStateError, read_json, read_yaml

SPECS_DIR = Path(".dihal") / "specs"
CHECKPOINTS = Path("artifacts") / "checkpoints"


def _is_dihal(entry: dict) -> bool:
    return str((entry or {}).get("cmd", "")).startswith("dihal stage ")


def _file(root: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return root / SPECS_DIR / (f"{safe}.json" if safe == name else f"{safe}-{digest(name)[:8]}.json")


REGISTRY_FIX = "delete it, then `dihal compile` the spec it registered (its stages and artifacts are kept)"
DVC_YAML_FIX = (
    "fix it by hand, or move it away and `dihal compile` each spec again (dihal rewrites its own stages; "
    "stages you wrote yourself come back only from a readable dvc.yaml)"
)


def _registration(path: Path) -> dict:
    reg = read_json(path, REGISTRY_FIX)
    if not isinstance(reg.get("name"), str) or not isinstance(reg.get("stages"), dict):
        raise ProjectStateError(f"{path} is not a spec registration (no name or stages): {REGISTRY_FIX}")
    return reg


def registered(root: Path) -> list[dict]:
    """Every registration, ordered by spec name (so `dvc.yaml` does not depend on compile order)."""
    d = root / SPECS_DIR
    regs = [_registration(p) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
    return sorted(regs, key=lambda r: r["name"])


def _write(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    write_atomic(path, text)


def _load_yaml(path: Path) -> dict:
    doc = read_yaml(path, DVC_YAML_FIX)
    if not isinstance(doc.get("stages") or {}, dict):
        raise ProjectStateError(f"{path}: `stages` is not a mapping: {DVC_YAML_FIX}")
    return doc


def _dump_yaml(path: Path, doc: dict) -> None:
    _write(path, yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120))


def register(root: Path, name: str, spec_hash: str, entries: dict[str, dict]) -> Path:
    """Record (or replace) spec `name`'s stages and regenerate dvc.yaml; returns dvc.yaml's path."""
    path = _file(root, name)
    retired = set(_registration(path)["stages"]) if path.exists() else set()
    reg = {"name": name, "spec_hash": spec_hash, "stages": entries}
    _write(path, json.dumps(reg, indent=2) + "\n")
    return write_dvc_yaml(root, retired)


def write_dvc_yaml(root: Path, retired: set[str] = frozenset(), prune_unknown: bool = False) -> Path:
    """dvc.yaml = the registered specs' stages + the user's own; other top-level keys kept as they are."""
    path = root / "dvc.yaml"
    doc = _load_yaml(path)
    old = doc.get("stages") or {}
    live: dict[str, dict] = {}
    for reg in registered(root):
        for st_name, entry in reg["stages"].items():
            live.setdefault(st_name, entry)
    kept = {k: v for k, v in old.items() if k not in live and (not _is_dihal(v) or not (prune_unknown or k in retired))}
    doc["stages"] = {**live, **kept}
    _dump_yaml(path, doc)
    return path


@dataclass
class Collected:
    unregistered: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    dvc_gc: str = ""  # empty when DVC's cache was collected too; else why not


def _name_of(arg: str) -> str:
    """A --keep/--drop argument: a spec name, or a spec file whose `name` is used (read by the spec reader,
    with its bounds: a spec file here is as untrusted as anywhere)."""
    p = Path(arg)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        try:
            doc, _ = read_spec_yaml(p)
        except SpecError as err:
            raise ValueError(f"{arg}: not a readable spec ({err.problems[0][2]})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{arg}: not a spec (a YAML mapping with a `name`), a YAML {type(doc).__name__}")
        return str(doc.get("name", arg))
    return arg


def _stale_results(root: Path, live: dict[str, dict]) -> list[str]:
    """DVC metrics files and plot folders (`metrics/<stage>.json`, `plots/<stage>/`) of dihal stages no
    registered spec names; files of other names (the user's) are left alone."""
    used = {
        next(iter(x)) if isinstance(x, dict) else x
        for e in live.values()
        for x in [*e.get("metrics", []), *e.get("plots", [])]
    }
    stale = []
    for top in ("metrics", "plots"):
        for p in sorted((root / top).glob("*")) if (root / top).is_dir() else []:
            rel = p.relative_to(root).as_posix()
            if p.name.split("-")[0] in KINDS and not any(u == rel or u.startswith(rel + "/") for u in used):
                stale.append(rel)
    return stale


def gc(root: Path, keep: list[str] | None = None, drop: list[str] = (), dry_run: bool = False) -> Collected:
    """Unregister specs (all but `keep`, when given, and those in `drop`), then remove whatever no registered
    spec names. Raises ValueError, changing nothing, when a named spec is not registered (a typo must not
    wipe a project)."""
    root = Path(root)
    regs = {r["name"]: r for r in registered(root)}
    named = [_name_of(a) for a in [*(keep or []), *drop]]
    unknown = [n for n in named if n not in regs]
    if unknown:
        raise ValueError(f"not registered: {', '.join(unknown)} (registered: {', '.join(regs) or 'none'})")
    keep_names = set(regs) if keep is None else {_name_of(a) for a in keep}
    gone = sorted((set(regs) - keep_names) | {_name_of(a) for a in drop})
    res = Collected(unregistered=gone)
    live = {st: e for n, r in regs.items() if n not in gone for st, e in r["stages"].items()}
    live_outs = {o for e in live.values() for o in e.get("outs", [])}
    live_cfgs = {e["deps"][0] for e in live.values() if e.get("deps")}
    doc = _load_yaml(root / "dvc.yaml")
    res.stages = [k for k, v in (doc.get("stages") or {}).items() if _is_dihal(v) and k not in live]
    arts = root / "artifacts"
    for kind in KINDS:
        for d in sorted((arts / kind).glob("*")) if (arts / kind).is_dir() else []:
            if f"artifacts/{kind}/{d.name}" not in live_outs:
                res.artifacts.append(f"artifacts/{kind}/{d.name}")
    live_train = {o.rsplit("/", 1)[-1] for o in live_outs if o.startswith("artifacts/train/")}
    for d in sorted((root / CHECKPOINTS).glob("*")) if (root / CHECKPOINTS).is_dir() else []:
        if d.name not in live_train:
            res.artifacts.append(f"{CHECKPOINTS.as_posix()}/{d.name}")
    res.artifacts += _stale_results(root, live)
    for p in sorted((root / ".dihal" / "stages").glob("*.json")):
        rel = p.relative_to(root).as_posix()
        if rel not in live_cfgs:
            res.configs.append(rel)
    if dry_run:
        return res
    for n in gone:
        _file(root, n).unlink()
    write_dvc_yaml(root, prune_unknown=True)
    lock = root / "dvc.lock"
    if lock.exists():
        ldoc = _load_yaml(lock)
        names = set(_load_yaml(root / "dvc.yaml").get("stages") or {})
        ldoc["stages"] = {k: v for k, v in (ldoc.get("stages") or {}).items() if k in names}
        _dump_yaml(lock, ldoc)
    for a in res.artifacts:
        if (root / a).is_dir():
            shutil.rmtree(root / a, ignore_errors=True)
        else:
            (root / a).unlink(missing_ok=True)
    for c in res.configs:
        (root / c).unlink(missing_ok=True)
    if (root / ".dvc").is_dir():
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", "gc", "--workspace", "--force"],
            cwd=root,
            capture_output=True,
            text=True,
            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        )
        res.dvc_gc = "" if proc.returncode == 0 else f"dvc gc failed (exit {proc.returncode}): {proc.stderr.strip()}"
    return res
