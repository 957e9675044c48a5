"""Score-stage time: every proxy for 8192 tokens × 29 layers of the embedded backbone."""

from __future__ import annotations

import time

import torch

from bench.common import blocks, embedded, header
from dihal.geometry import compute_layer_proxies, score_layers


def main(n_tokens: int = 8192, seq_len: int = 64) -> None:
    bb, ad = embedded()
    n_seq = -(-n_tokens // (seq_len - 1))
    ids = blocks(bb, n_seq, seq_len)
    layers = list(range(1, ad.n_layers))
    states = {layer: [] for layer in layers}
    for i in range(0, n_seq, 16):
        for layer, h in ad.hidden_states(ids[i : i + 16], layers).items():
            states[layer].append(h[:, 1:].reshape(-1, ad.d))
    states = {k: torch.cat(v)[:n_tokens].numpy() for k, v in states.items()}
    header(f"score: {n_tokens} tokens × {len(layers)} layers, d={ad.d}")
    t = time.perf_counter()
    per_layer = {k: compute_layer_proxies(v, proxies=("kappa", "sigma", "erank")) for k, v in states.items()}
    t_score = time.perf_counter() - t
    table = score_layers(per_layer, {"kappa": 1.0, "sigma": 1.0, "erank": -1.0})
    print(f"score stage (κ, σ, r, PR, λ_min): {t_score:.1f} s total, {t_score / len(layers):.2f} s/layer")
    print(f"selected layer ℓ* = {table.best()}")


if __name__ == "__main__":
    main()
