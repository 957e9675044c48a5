"""Content hashes: the spec hash keys the ledger, stage hashes key the artifacts.

A hash is the sha256 of canonical JSON (sorted keys, no whitespace) of the
*validated* spec, so YAML key order, comments, `1e-3` vs `0.001` and spelled-out
defaults cannot change it, while any semantic change does. Each stage hashes only
the fields it depends on, so specs that share a backbone and data share an
extraction, and changing `geometry.k` re-runs score but not extract.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dihal.spec.schema import LABEL_FIELDS, Spec


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
}


def semantic_dict(spec: Spec) -> dict:
    """The spec as JSON-able data, without pure labels."""
    out = spec.model_dump(mode="json", exclude=set(LABEL_FIELDS))
    for section, name in HASHED_WHEN_SET:
        holder = out if section is None else out.get(section)
        if isinstance(holder, dict) and holder.get(name) is None:
            holder.pop(name, None)
    return out


def spec_hash(spec: Spec) -> str:
    return digest(semantic_dict(spec))


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
