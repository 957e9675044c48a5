"""extract: hidden states of every candidate layer on the geometry sample.

States go straight from each batch into one memory-mapped `.npy` per layer, so
memory stays at one batch × all layers however large N is. Position 0 (the block
start token, an attention sink) and any special token are dropped here; METHOD.md's
proxies never see them. Each kept state's document is stored beside it
(`documents.npy`), because the stability bootstrap in `score` resamples documents, and so
is its token id (`state_tokens.npy`, with the text of each distinct id in `token_text.json`),
so `score` can name the tokens behind a dominant channel without loading a tokenizer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dihal.data.blocks import content_mask
from dihal.stages.common import StageConfig, Timer, open_backbone, sample_split_blocks, save_array, write_json
from dihal.utils import progress


def layer_file(layer: int) -> str:
    return f"layer_{layer:03d}.npy"


def run(cfg: StageConfig) -> None:
    geo = cfg.params["geometry"]
    seed = cfg.params["seed"]
    bb, ad = open_backbone(cfg.backbone_spec())
    layers = geo["layers"] or list(range(1, ad.n_layers))
    bad = [layer for layer in layers if layer > ad.n_layers]
    if bad:
        raise ValueError(f"geometry.layers: {bad} exceed the backbone's {ad.n_layers} blocks")
    T, N = geo["seq_len"], geo["n_tokens"]
    n_seq = math.ceil(N / (T - 1))
    blocks, start, specials = sample_split_blocks(cfg, bb.tokenizer, "geometry", seq_len=T, n_blocks=n_seq, seed=seed)
    ids = blocks.ids
    keep = content_mask(ids, specials)
    if int(keep.sum()) < N:  # cannot happen: specials are removed while blocks are built
        raise ValueError(f"only {int(keep.sum())} content states in {n_seq} blocks, fewer than n_tokens={N}")
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    save_array(out / "tokens.npy", ids)
    save_array(out / "documents.npy", np.repeat(blocks.doc[:, None], T, axis=1)[keep][:N].astype(np.int32))
    state_ids = ids[keep][:N].astype(np.int32)
    save_array(out / "state_tokens.npy", state_ids)
    write_json(out / "token_text.json", {str(i): bb.tokenizer.decode([int(i)]) for i in np.unique(state_ids)})
    maps = {
        layer: np.lib.format.open_memmap(out / layer_file(layer), mode="w+", dtype=np.float32, shape=(N, ad.d))
        for layer in layers
    }
    bs = geo["batch_size"]
    row = 0
    with Timer() as timer, torch.inference_mode():
        bar = progress.bar(total=n_seq * T, desc=f"extract {len(layers)} layers", unit="tok")
        for start_row in range(0, n_seq, bs):
            batch = torch.as_tensor(ids[start_row : start_row + bs], device=ad.device)
            states = ad.hidden_states(batch, layers)
            kb = torch.as_tensor(keep[start_row : start_row + bs], device=ad.device)
            take = min(N - row, int(kb.sum()))
            for layer, h in states.items():
                flat = h[kb][:take].float().cpu().numpy()
                maps[layer][row : row + take] = flat
            row += take
            bar.update(batch.numel())
        bar.close()
    for m in maps.values():
        m.flush()
    del maps
    write_json(
        out / "meta.json",
        {
            "layers": layers,
            "n_layers": ad.n_layers,
            "d": ad.d,
            "n_tokens": N,
            "seq_len": T,
            "n_sequences": n_seq,
            "backbone": bb.location,
            "model_type": ad.model_type,
            "attn_implementation": getattr(bb.model.config, "_attn_implementation", None),
            "block_start": {"id": start.id, "text": start.text, "rule": start.rule, "why": start.why},
            "blocks": blocks.stats,
            "documents": blocks.doc_ids,
            "seconds": timer.seconds,
            "tokens_per_s": n_seq * T / timer.seconds,
        },
    )
