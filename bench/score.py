"""Score-stage time with and without the stability bootstrap, and the fast replicates against full recomputation.

On the quickstart's own geometry sample (8192 tokens, 29 layers of the embedded backbone, blocks as the
extract stage makes them). Target (issue 7): the 200-replicate document bootstrap adds at most 25% to
the stage. The second part recomputes every proxy on a few resamples from scratch, the independent
check of the shortcuts `geometry/stability.py` takes.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from bench.common import embedded, header
from dihal.data.blocks import content_mask, sample_blocks
from dihal.data.corpora import load_documents, split_documents
from dihal.data.tokens import resolve_block_start, special_ids
from dihal.geometry import ProxyContext, compute_layer_proxies
from dihal.geometry.locate import locate
from dihal.geometry.outliers import apply_rule
from dihal.geometry.proxies import evaluate_proxies
from dihal.geometry.stability import document_counts, layer_replicates
from dihal.spec.geometry import SPACE_NAMES
from dihal.spec.schema import DataSpec

WEIGHTS = {"kappa": 1.0, "sigma": 1.0, "erank": -1.0}


def sample(n_tokens: int = 8192, seq_len: int = 64):
    bb, ad = embedded()
    data = DataSpec()
    start = resolve_block_start(bb.tokenizer, data.block_start)
    docs = split_documents(load_documents(data), data.splits)["geometry"]
    b = sample_blocks(
        docs,
        bb.tokenizer,
        start_id=start.id,
        seq_len=seq_len,
        n_blocks=math.ceil(n_tokens / (seq_len - 1)),
        seed=0,
        max_per_doc=data.max_blocks_per_document,
    )
    keep = content_mask(b.ids, special_ids(bb.tokenizer) | {start.id})
    doc = np.repeat(b.doc[:, None], seq_len, axis=1)[keep][:n_tokens]
    layers = list(range(1, ad.n_layers))
    states = {layer: [] for layer in layers}
    with torch.inference_mode():
        for i in range(0, len(b.ids), 16):
            batch = torch.as_tensor(b.ids[i : i + 16])
            kb = torch.as_tensor(keep[i : i + 16])
            for layer, h in ad.hidden_states(batch, layers).items():
                states[layer].append(h[kb].float().numpy())
    return {k: np.concatenate(v)[:n_tokens] for k, v in states.items()}, doc, layers


def main(n_boot: int = 200, check_layers=(3, 7, 12, 20), check_reps: int = 12) -> None:
    states, doc, layers = sample()
    header(f"score: {len(doc)} tokens x {len(layers)} layers from {doc.max() + 1} documents")
    times = {}
    for b in (0, n_boot):
        t = time.perf_counter()
        res = locate(layers, states.get, doc, weights=WEIGHTS, names=WEIGHTS, n_boot=b, spaces=SPACE_NAMES)
        times[b] = time.perf_counter() - t
        share = (
            "" if res.stability is None else f", argmax share {res.stability.share[layers.index(res.table.best())]:.0%}"
        )
        print(
            f"n_boot={b:>3}: {times[b]:.1f} s (bootstrap itself {res.bootstrap_seconds:.1f} s); ℓ* = {res.table.best()}{share}"
        )
    print(f"the bootstrap adds {times[n_boot] / times[0] - 1:+.0%} to the stage (target: at most +25%)")

    print(f"\nfast replicates vs full recomputation, {check_reps} document resamples, mean ± sd:")
    counts = document_counts(int(doc.max()) + 1, check_reps, seed=1)
    for space in SPACE_NAMES:  # in the bridge space a replicate keeps the full sample's channel statistics
        for layer in check_layers:
            kept, keep, _ = apply_rule(states[layer])
            ctx = ProxyContext.from_states(kept, space=space)
            evaluate_proxies(ctx, list(WEIGHTS))
            fast = layer_replicates(ctx, doc[keep], counts, list(WEIGHTS))
            full = {name: [] for name in WEIGHTS}
            d = doc[keep]
            for r, c in enumerate(counts):
                idx = np.concatenate([np.flatnonzero(d == j) for j in range(len(c)) for _ in range(int(c[j]))])
                vals = compute_layer_proxies(kept[idx], proxies=["sigma", "erank"], seed=r, space=space)
                vals.update(compute_layer_proxies(kept[c[d] > 0], proxies=["kappa"], seed=r, space=space))
                for name in WEIGHTS:
                    full[name].append(vals[name])
            line = "  ".join(
                f"{n} {np.mean(fast[n]):.3f}±{np.std(fast[n]):.3f} vs {np.mean(full[n]):.3f}±{np.std(full[n]):.3f}"
                for n in WEIGHTS
            )
            print(f"{space:>6} layer {layer:>2}: {line}")


if __name__ == "__main__":
    main()
