"""targets: the bridge's training and validation data, h_ℓ of the train/validation splits.

Only blocks 1..ℓ run. In a sweep each layer's stage is linked to the previous
swept layer and continues from its stored states (same token blocks, same batch
partition, float32 storage), which gives the same bytes as running from the
embeddings at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
import torch

from dihal.stages.common import (
    StageConfig,
    Timer,
    open_backbone,
    read_json,
    sample_split_blocks,
    save_array,
    write_json,
)
from dihal.utils import progress


def resolve_layer(cfg: StageConfig) -> int:
    layer = cfg.params["layer"]
    if layer == "selected":
        layer = int(read_json(cfg.inputs["select"] / "selection.json")["layer"])
    return int(layer)


def run(cfg: StageConfig) -> None:
    b, seed = cfg.params["bridge"], cfg.params["seed"]
    layer = resolve_layer(cfg)
    bb, ad = open_backbone(cfg.backbone_spec())
    if not 1 <= layer <= ad.n_layers:
        raise ValueError(f"bridge layer {layer} is outside the backbone's blocks 1..{ad.n_layers}")
    T, bs = b["seq_len"], b["extract_batch_size"]
    # Same block rules as the geometry sample: one document per block, spread round-robin over documents, so
    # each validation batch (a contiguous slice) holds blocks of distinct documents.
    sampled = {
        "train": sample_split_blocks(cfg, bb.tokenizer, "train", seq_len=T, n_blocks=b["n_train"], seed=seed),
        "val": sample_split_blocks(cfg, bb.tokenizer, "validation", seq_len=T, n_blocks=b["n_val"], seed=seed),
    }
    ids = {k: blocks.ids for k, (blocks, _, _) in sampled.items()}
    start_token = sampled["train"][1]
    start, source = 0, None
    if cfg.link is not None and (cfg.link / "meta.json").exists():
        link_meta = read_json(cfg.link / "meta.json")
        same_tokens = all(np.array_equal(np.load(cfg.link / f"{k}_ids.npy"), v) for k, v in ids.items())
        if link_meta["layer"] < layer and same_tokens and link_meta["batch_size"] == bs:
            start, source = link_meta["layer"], cfg.link
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    with Timer() as timer, torch.inference_mode():
        for split, split_ids in ids.items():
            save_array(out / f"{split}_ids.npy", split_ids)
            save_array(out / f"{split}_docs.npy", sampled[split][0].doc)
            prev = np.load(source / f"{split}_h.npy", mmap_mode="r") if source else None
            dest = np.lib.format.open_memmap(
                out / f"{split}_h.npy", mode="w+", dtype=np.float32, shape=(*split_ids.shape, ad.d)
            )
            bar = progress.bar(
                total=split_ids.size, desc=f"targets L{layer} {split} (blocks {start + 1}..{layer})", unit="tok"
            )
            for i in range(0, len(split_ids), bs):
                batch = torch.as_tensor(split_ids[i : i + bs], device=ad.device)
                if prev is None:
                    h = ad.embed(batch)
                else:
                    h = torch.as_tensor(np.array(prev[i : i + bs]), device=ad.device).to(ad.dtype)
                h = ad.run_blocks(h, start, layer)
                dest[i : i + bs] = h.float().cpu().numpy()
                bar.update(batch.numel())
            bar.close()
            dest.flush()
            del dest
    write_json(
        out / "meta.json",
        {
            "layer": layer,
            "n_layers": ad.n_layers,
            "d": ad.d,
            "seq_len": T,
            "batch_size": bs,
            "n_train": b["n_train"],
            "n_val": b["n_val"],
            "continued_from_layer": start,
            "seconds": timer.seconds,
            "backbone": bb.location,
            "block_start": {"id": start_token.id, "text": start_token.text, "rule": start_token.rule},
            "blocks": {k: blocks.stats for k, (blocks, _, _) in sampled.items()},
            "special_ids": sorted(sampled["train"][2]),
        },
    )
