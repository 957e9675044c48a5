"""Relative paths in a spec are relative to the spec file's folder, wherever dihal is started from.

Stages run at the project root (DVC's working directory), so every relative path a spec names --
`data.paths`, a local `data.dataset` directory, a `local` backbone's directory, and the same fields
in sensitivity variants -- is rewritten once, at load time, to the same file expressed relative to the
project root (absolute paths stay as written). The rewritten spec is the one that is hashed, checked,
compiled and recorded, so a spec means the same files from any working directory.

A spec that sits in the project root is returned unchanged: there both rules name the same file, so
its stage identities stay what they were before this rule. Shipped specs name no relative paths at
all, so their hashes cannot change either.
"""

from __future__ import annotations

import os
from pathlib import Path

from dihal.spec.overrides import read_spec_yaml
from dihal.spec.schema import BackboneSpec, Spec, parse_spec


def _rebase(p: str, spec_dir: Path, root: Path) -> str:
    if os.path.isabs(p):
        return p
    target = os.path.normpath(os.path.join(spec_dir, p))
    try:
        return Path(os.path.relpath(target, root)).as_posix()  # relative to the root: the tree can move
    except ValueError:  # another drive (Windows): no relative path exists
        return target


def _is_local_dataset(name: str | None, spec_dir: Path) -> bool:
    """A `data.dataset` names a directory when it says so (./, ../) or one exists there; else it is a hub name."""
    return bool(name) and not os.path.isabs(name) and (name.startswith(".") or (spec_dir / name).is_dir())


def _data_fields(d: dict, spec_dir: Path, root: Path, source: str | None) -> dict:
    out = dict(d)
    if out.get("paths"):
        out["paths"] = tuple(_rebase(p, spec_dir, root) for p in out["paths"])
    if source == "hf" and _is_local_dataset(out.get("dataset"), spec_dir):
        out["dataset"] = _rebase(out["dataset"], spec_dir, root)
    return out


def resolve_paths(spec: Spec, spec_dir: Path | str, root: Path | str) -> Spec:
    """The spec with its relative paths rebased from `spec_dir` onto `root` (unchanged when they are one folder)."""
    spec_dir, root = Path(spec_dir).resolve(), Path(root).resolve()
    if spec_dir == root:
        return spec
    data = spec.data.model_copy(
        update=_data_fields({"paths": spec.data.paths, "dataset": spec.data.dataset}, spec_dir, root, spec.data.source)
    )
    backbone = spec.backbone
    if backbone.source == "local" and backbone.id:
        backbone = backbone.model_copy(update={"id": _rebase(backbone.id, spec_dir, root)})
    variants = tuple(
        v.model_copy(update={"data": _data_fields(v.data, spec_dir, root, v.data.get("source", spec.data.source))})
        if v.data
        else v
        for v in spec.sensitivity
    )
    return spec.model_copy(update={"data": data, "backbone": backbone, "sensitivity": variants})


def load_project_spec(path: Path | str, root: Path | str, overrides: list[str] | None = None) -> tuple[Spec, str]:
    """The spec every command hashes and runs (its `extends:` and `-S` overrides applied, then the path rule),
    and the YAML to record: as written, or the derived spec's merged YAML (`dihal.spec.overrides`)."""
    raw, text = read_spec_yaml(path, overrides)
    return resolve_paths(parse_spec(raw, str(path)), Path(path).parent, root), text


def at_root(backbone: BackboneSpec, root: Path | str) -> BackboneSpec:
    """A `local` backbone's directory as an absolute path, for code that does not run at the project root."""
    if backbone.source != "local" or not backbone.id or os.path.isabs(backbone.id):
        return backbone
    return backbone.model_copy(update={"id": str(Path(root) / backbone.id)})
