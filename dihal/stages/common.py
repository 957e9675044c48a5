"""What every stage shares: reading its frozen config, loading the backbone, writing JSON."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dihal.spec import BackboneSpec, DataSpec


@dataclass
class StageConfig:
    kind: str
    hash: str
    params: dict
    inputs: dict[str, Path]
    link: Path | None
    out: Path
    runtime: dict

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
        )

    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec.model_validate(self.params["backbone"])

    def data_spec(self) -> DataSpec:
        return DataSpec.model_validate(self.params["data"])


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")
    tmp.replace(path)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def sample_split_blocks(cfg: StageConfig, tokenizer, split: str, *, seq_len: int, n_blocks: int, seed: int):
    """(Blocks, BlockStart, special ids) for one split of the stage's data, by the spec's block rules."""
    from dihal.blocks import sample_blocks
    from dihal.data import load_documents, split_documents
    from dihal.tokens import resolve_block_start, special_ids

    data = cfg.data_spec()
    start = resolve_block_start(tokenizer, data.block_start)
    docs = split_documents(load_documents(data), data.splits)[split]
    blocks = sample_blocks(docs, tokenizer, start_id=start.id, seq_len=seq_len, n_blocks=n_blocks, seed=seed,
                           max_per_doc=data.max_blocks_per_document, align=data.block_align, split=split)  # fmt: skip
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
