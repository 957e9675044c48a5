"""Extraction throughput: dihal's explicit block loop vs HF's forward with output_hidden_states, and both
against the machine's own matmul rate.

Same batches of the embedded backbone (the quickstart's geometry sample: 64-token blocks, 16 per batch);
dihal stops after the deepest layer it needs and never runs the LM head. Prints tokens/s, the ratio to HF
(>1 means dihal is faster) and the share of the measured peak each reaches: the FLOPs a token costs (2 per
weight of the blocks it passes through, plus causal attention) times tokens/s, over the best rate of an fp32
GEMM of the blocks' own largest shape ([tokens per batch, d] × [d, intermediate]). The last line runs the
extract stage's loop as the stage runs it (masking, copies into one memory-mapped .npy per layer), so the
distance between it and the bare forward is the stage's own bookkeeping.

    .venv/bin/python -m bench.extraction [--blocks 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import blocks, embedded, header, timed


def peak_gflops(m: int, k: int, n: int, seconds: float = 3.0) -> float:
    """Best fp32 GEMM rate at [m, k] × [k, n] over about `seconds` (the least disturbed repeat)."""
    import time

    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up: thread pool, allocator
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(8):
            a @ b
        best = min(best, (time.perf_counter() - t) / 8)
    return 2 * m * k * n / best / 1e9


def flops_per_token(ad, top: int, seq_len: int) -> float:
    """2 FLOPs per weight of blocks 1..top (embedding and head excluded) plus causal attention's two matmuls."""
    per_block = sum(p.numel() for p in ad.blocks[0].parameters() if p.dim() > 1)
    mean_context = (seq_len + 1) / 2
    return top * (2 * per_block + 4 * mean_context * ad.d)


def stage_loop(ad, ids: torch.Tensor, layers: list[int], batch: int, out: Path):
    """The extract stage's loop (dihal/stages/extract.py) on these blocks: forward, drop position 0, copy each
    layer's states into its memory-mapped file."""
    keep = np.ones(ids.shape, dtype=bool)
    keep[:, 0] = False
    n = int(keep.sum())
    maps = {
        layer: np.lib.format.open_memmap(out / f"layer_{layer:03d}.npy", mode="w+", dtype=np.float32, shape=(n, ad.d))
        for layer in layers
    }

    def run():
        row = 0
        with torch.inference_mode():
            for i in range(0, len(ids), batch):
                states = ad.hidden_states(ids[i : i + batch], layers)
                kb = torch.as_tensor(keep[i : i + batch])
                take = int(kb.sum())
                for layer, h in states.items():
                    maps[layer][row : row + take] = h[kb].float().cpu().numpy()
                row += take
        for m in maps.values():
            m.flush()

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=64, help="64-token blocks per timed pass")
    ap.add_argument("--batch", type=int, default=16, help="blocks per forward (geometry.batch_size)")
    args = ap.parse_args()
    bb, ad = embedded()
    ids = blocks(bb, args.blocks)
    n_tok, T = ids.numel(), ids.shape[1]
    inter = bb.model.config.intermediate_size
    peak = peak_gflops(args.batch * T, ad.d, inter)

    def hf():
        with torch.inference_mode():
            for i in range(0, args.blocks, args.batch):
                bb.model(ids[i : i + args.batch], output_hidden_states=True)

    def ours(layers):
        def run():
            with torch.inference_mode():
                for i in range(0, args.blocks, args.batch):
                    ad.hidden_states(ids[i : i + args.batch], layers)

        return run

    head = 2 * bb.model.get_output_embeddings().weight.numel()  # HF also computes every position's logits

    def line(label: str, seconds: float, top: int, extra: float = 0.0) -> None:
        rate = n_tok / seconds
        share = rate * (flops_per_token(ad, top, T) + extra) / 1e9 / peak
        print(f"{label} : {rate:8.0f} tok/s   ratio vs HF {t_hf / seconds:5.2f}x   {share:5.0%} of the peak")

    header(f"extraction: {args.blocks} blocks × {T} tokens, batch {args.batch}")
    print(f"fp32 GEMM [{args.batch * T}, {ad.d}] × [{ad.d}, {inter}], best of 3 s: {peak:.0f} GFLOP/s (the peak)")
    t_hf = timed(hf)
    line("HF forward, output_hidden_states=True", t_hf, ad.n_layers, head)
    everything = list(range(1, ad.n_layers))
    for label, layers in (
        ("dihal, layers 1..29 (all candidates)  ", everything),
        ("dihal, layers 1..12 (stops early)     ", list(range(1, 13))),
        ("dihal, layers 1..3 (stops early)      ", [1, 2, 3]),
    ):
        line(label, timed(ours(layers)), max(layers))
    with tempfile.TemporaryDirectory(prefix="dihal-bench-extract-") as d:
        line("extract's loop, 1..29, into .npy maps ", timed(stage_loop(ad, ids, everything, args.batch, Path(d))), 29)


if __name__ == "__main__":
    main()
