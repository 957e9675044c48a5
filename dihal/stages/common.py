"""What every stage shares: reading its frozen config, loading the backbone, writing JSON."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dihal.spec.schema import BackboneSpec, DataSpec
from dihal.utils.atomic import write_atomic


@dataclass
class StageConfig:
    kind: str
    hash: str
    params: dict
    inputs: dict[str, Path]
    link: Path | None
    out: Path
    runtime: dict
    results: dict = field(default_factory=dict)  # DVC metrics/plots files (dihal.stages.dvc_files); none in old configs
    identity: dict = field(default_factory=dict)  # code hash, model pin (dihal.stages.identity); none in old configs

    @classmethod
    def read(cls, path: Path | str) -> StageConfig:
        raw = json.loads(Path(path).read_text())
        return cls(
            kind=raw["kind"],
            hash=raw["hash"],
            params=raw["params"],
            inputs={k: Path(v) for k, v in raw["inputs"].items()},
            link=Path(raw["link"]) if raw.get("link") else None,
            out=Path(raw["out"]),
            runtime=raw.get("runtime", {}),
            results=raw.get("results", {}),
            identity=raw.get("identity") or {},
        )

    def backbone_spec(self) -> BackboneSpec:
        """The spec's backbone; an unpinned hub model is loaded at the commit the stage's identity names
        (resolved from the local HF cache at compile time), so the weights are the ones the name promises."""
        spec = BackboneSpec.model_validate(self.params["backbone"])
        commit = (self.identity.get("model") or {}).get("commit")
        if spec.source == "hf" and spec.revision is None and commit:
            spec = spec.model_copy(update={"revision": commit})
        return spec

    def data_spec(self) -> DataSpec:
        return DataSpec.model_validate(self.params["data"])


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_results(cfg: StageConfig, metrics: dict | None = None, plots: dict[str, list] | None = None) -> None:
    """The stage's DVC metrics and plot files (see dihal.stages.dvc_files), where its config names them."""
    if metrics is not None and "metrics" in cfg.results:
        write_json(Path(cfg.results["metrics"]), metrics)
    for name, rows in (plots or {}).items():
        if name in cfg.results.get("plots", {}):
            write_json(Path(cfg.results["plots"][name]), rows)


# What the judge reports for every generated-text row (the bridge, each C3 interface, each reference), in the
# order the ledger and the report list them, then MAUVE and its interval (dihal.analysis.mauve_metric; None for
# real_text when the pool holds no block for its ceiling, and in rows measured before MAUVE: not measured).
JUDGED_METRICS = ("gen_ppl", "gen_nll", "distinct_1", "distinct_2", "distinct_3", "diversity", "unigram_entropy")
GEN_METRICS = (*JUDGED_METRICS, "mauve", "mauve_lo", "mauve_hi")

# The numbers each stage reports as its result: a NaN or inf among them fails the stage (check_stage_finite), and
# the same columns of the ledger rows fail the ingest (dihal.ledger.ingest). Diagnostics that may be undefined (a proxy,
# an interval or p-value with ties, outlier ratios) are deliberately not listed.
RESULT_METRICS: dict[str, tuple[str, ...]] = {
    "train": ("loss",),  # every logged point of the training curve
    "evaluate": (
        "bridge_val_loss",
        "val_batch_losses",
        "recovery_ce",
        "recovery_token_acc",
        "recovery_clean_agreement",
        *GEN_METRICS,
    ),
    "score": ("score",),  # G per layer
    "select": ("score",),  # G at ℓ* (None when a fixed ℓ is not a candidate layer)
    "correlate": ("spearman_rho", "kendall_tau"),
    "reference": GEN_METRICS,
    "frontier": GEN_METRICS,  # every (temperature, steps) point
}


class NonFiniteMetricError(ValueError):
    """A result metric is NaN or infinite: the stage (or the ingest) fails instead of recording it as a result."""


def non_finite(metrics: dict, keys) -> list[tuple[str, object]]:
    """(name, value) for each NaN/inf among `metrics[key]` (numbers or lists of numbers; None and absent keys are
    skipped: they mean "not measured", which the reports show as such, not a broken number)."""
    bad = []
    for key in keys:
        value = metrics.get(key)
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                bad.append((key if i is None else f"{key}[{i}]", v))
    return bad


def check_finite(where: str, metrics: dict, keys) -> None:
    """Raise NonFiniteMetricError naming `where`, each non-finite metric and its value.

    A NaN loss (e.g. from an empty averaging grid) would otherwise be written, ingested and shown as a
    succeeded result; failing here names the culprit instead of leaving a blank in the report."""
    bad = non_finite(metrics, keys)
    if bad:
        shown = ", ".join(f"{k} = {v}" for k, v in bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
        raise NonFiniteMetricError(f"{where}: non-finite result metric(s): {shown}")


def stage_label(cfg: StageConfig) -> str:
    """The stage's DVC name (its metrics file's stem, e.g. 'evaluate-L03-s0-26c8db07') or kind-hash."""
    metrics = cfg.results.get("metrics")
    return Path(metrics).stem if metrics else f"{cfg.kind}-{cfg.hash[:8]}"


def check_stage_finite(cfg: StageConfig, metrics: dict, keys) -> None:
    """check_finite for a stage's results, named by the stage, before anything is written."""
    check_finite(f"stage {stage_label(cfg)}", metrics, keys)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def sample_split_blocks(cfg: StageConfig, tokenizer, split: str, *, seq_len: int, n_blocks: int, seed: int):
    """(Blocks, BlockStart, special ids) for one split of the stage's data, by the spec's block rules."""
    from dihal.data.blocks import sample_blocks
    from dihal.data.corpora import load_documents, split_documents
    from dihal.data.tokens import resolve_block_start, special_ids

    data = cfg.data_spec()
    start = resolve_block_start(tokenizer, data.block_start)
    docs = split_documents(load_documents(data), data.splits)[split]
    blocks = sample_blocks(
        docs,
        tokenizer,
        start_id=start.id,
        seq_len=seq_len,
        n_blocks=n_blocks,
        seed=seed,
        max_per_doc=data.max_blocks_per_document,
        align=data.block_align,
        split=split,
    )
    return blocks, start, special_ids(tokenizer) | {start.id}


def open_backbone(spec: BackboneSpec):
    """(Backbone, BackboneAdapter) for a stage; imported lazily so light stages stay light."""
    from dihal.backbone import BackboneAdapter, load_backbone

    bb = load_backbone(spec)
    return bb, BackboneAdapter(bb.model)


def save_array(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, arr)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
