"""Content hashes: the spec hash keys the ledger, stage hashes key the artifacts.

A hash is the sha256 of canonical JSON (sorted keys, no whitespace) of the
*validated* spec, so YAML key order, comments, `1e-3` vs `0.001` and spelled-out
defaults cannot change it, while any semantic change does. Local files enter the spec hash
by content, never by path (`dihal.spec.inputs`), so the working directory cannot change it. Each stage hashes only
the fields it depends on, so specs that share a backbone and data share an
extraction, and changing `geometry.k` re-runs score but not extract.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dihal.spec.inputs import input_digests, local_paths
from dihal.spec.schema import LABEL_FIELDS, RECIPE_KEYS, BridgeSpec, Spec


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


# Fields added after specs were first hashed, hashed only when set: an unset one leaves every earlier
# spec's hash (and stage names) as they were. (section, field) pairs; section None for a top-level field.
HASHED_WHEN_SET = {
    ("backbone", "attn_implementation"),
    ("backbone", "device_map"),
    ("backbone", "max_memory"),
    (None, "baselines"),
    ("eval", "frontier"),
}
# Fields added after specs were first hashed whose default is the behaviour from before they existed: hashed
# only when they differ from it, with the same effect. (section, field) -> that default.
HASHED_UNLESS_DEFAULT = {("bridge", key): BridgeSpec.model_fields[key].default for key in RECIPE_KEYS}


def semantic_dict(spec: Spec) -> dict:
    """The spec as JSON-able data, without pure labels."""
    out = spec.model_dump(mode="json", exclude=set(LABEL_FIELDS))
    for section, name in HASHED_WHEN_SET:
        holder = out if section is None else out.get(section)
        if isinstance(holder, dict) and holder.get(name) is None:
            holder.pop(name, None)
    for (section, name), default in HASHED_UNLESS_DEFAULT.items():
        holder = out.get(section)
        if isinstance(holder, dict) and name in holder and holder[name] == default:
            del holder[name]
    return out


def by_content(semantic: dict, inputs: Mapping[str, str]) -> dict:
    """A copy of a semantic dict with each local path that `inputs` names replaced by its content digest."""
    out = json.loads(canonical_json(semantic))

    def swap(d: dict | None) -> None:
        if not d:
            return
        if d.get("paths"):
            d["paths"] = [inputs.get(p, p) for p in d["paths"]]
        if d.get("dataset") in inputs:
            d["dataset"] = inputs[d["dataset"]]

    swap(out.get("data"))
    for v in out.get("sensitivity") or ():
        swap(v.get("data"))
    bb = out.get("backbone") or {}
    if bb.get("source") == "local" and bb.get("id") in inputs:
        bb["id"] = inputs[bb["id"]]
    return out


def hashed_dict(spec: Spec, inputs: Mapping[str, str] | None = None) -> dict:
    """What the spec hash is the digest of: `semantic_dict` with local paths named by content."""
    inputs = inputs or {}
    missing = [f"{field} = {path!r}" for field, path, _ in local_paths(spec) if path not in inputs]
    if missing:  # a path hashed as a string would make the hash depend on where dihal was started
        raise ValueError(
            f"no content digest for {', '.join(missing)}: pass dihal.spec.inputs.input_digests(spec, root)"
        )
    return by_content(semantic_dict(spec), inputs)


def spec_hash(spec: Spec, inputs: Mapping[str, str] | None = None) -> str:
    """The ledger key: the validated spec without labels, its local files named by content (`inputs`:
    path -> digest from `dihal.spec.inputs.input_digests`, needed whenever the spec names local files)."""
    return digest(hashed_dict(spec, inputs))


def project_spec_hash(spec: Spec, root: Path | str) -> str:
    """The spec hash of a spec loaded for the project at `root` (its local files read and digested)."""
    return spec_hash(spec, input_digests(spec, root))


def record_json(spec: Spec, inputs: Mapping[str, str] | None = None) -> str:
    """What the ledger records as the spec: its canonical JSON, plus `inputs` when it names local files
    (so a rebuild can check the hash after the files have moved)."""
    out = semantic_dict(spec)
    if inputs:
        out["inputs"] = dict(inputs)
    return canonical_json(out)


def from_record(canonical: str) -> tuple[dict, dict[str, str]]:
    """(spec fields, input digests) from a recorded canonical JSON (`record_json`)."""
    data = json.loads(canonical)
    inputs = data.pop("inputs", None) or {}
    return data, inputs


def hashed_text_of_record(canonical: str) -> str:
    """The exact text a recorded spec's hash is the sha256 of (the record itself when it names no local files)."""
    data, inputs = from_record(canonical)
    return canonical_json(by_content(data, inputs))


# The spec fields each stage depends on; `pipeline.plan` builds stage identities from them.
EXTRACT_KEYS = ["seq_len", "n_tokens", "batch_size", "layers"]
SCORE_KEYS = [
    "anchors",
    "k",
    "pairs",
    "ridge",
    "proxies",
    "outliers",
    "n_boot",
    "space",
    "spaces",
]  # warn_top_share: display only
TARGET_KEYS = ["seq_len", "n_train", "n_val", "extract_batch_size"]
REFERENCE_KEYS = ["seq_len", "n_val", "prefix"]  # plus backbone, data, seed, bridge seeds, eval.n_samples
TRAIN_KEYS = [
    "seq_len",
    "prefix",
    "d_model",
    "depth",
    "heads",
    "time_cond",
    "pos",
    "objective",
    "steps",
    "batch_size",
    "lr",
    "warmup",
    "weight_decay",
    "grad_clip",
    "outliers",
]
