"""Extraction throughput: dihal's explicit block loop vs HF's forward with output_hidden_states.

Same batches of the embedded backbone; dihal stops after the deepest layer it needs and never
runs the LM head. Prints tokens/s and the ratio (>1 means dihal is faster).
"""

from __future__ import annotations

import torch

from bench.common import blocks, embedded, header, timed


def main(n_seq: int = 64, batch: int = 16) -> None:
    bb, ad = embedded()
    ids = blocks(bb, n_seq)
    n_tok = ids.numel()

    def hf():
        with torch.inference_mode():
            for i in range(0, n_seq, batch):
                bb.model(ids[i : i + batch], output_hidden_states=True)

    def ours(layers):
        def run():
            for i in range(0, n_seq, batch):
                ad.hidden_states(ids[i : i + batch], layers)

        return run

    header(f"extraction: {n_seq} blocks × {ids.shape[1]} tokens, batch {batch}")
    t_hf = timed(hf)
    print(f"HF forward, output_hidden_states=True : {n_tok / t_hf:8.0f} tok/s")
    for label, layers in (
        ("dihal, layers 1..29 (all candidates)", list(range(1, 30))),
        ("dihal, layers 1..12 (stops early)  ", list(range(1, 13))),
        ("dihal, layers 1..3 (stops early)   ", [1, 2, 3]),
    ):
        t = timed(ours(layers))
        print(f"{label} : {n_tok / t:8.0f} tok/s   ratio vs HF {t_hf / t:5.2f}x")


if __name__ == "__main__":
    main()
