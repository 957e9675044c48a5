"""The generic family's cost: hooks on the model's own forward vs the explicit block loop, on the same model.

A tiny random Llama (which has a fast family) is split twice: by its own family and forced onto the generic
path (`families/generic.py`). Prints the time of `hidden_states` (all layers; stopping early at layer 2) and
of `logits_from` (the splice) at a low, middle and high layer, and the slowdown (generic / fast; >1 means
the generic path is slower). Run: `python -m bench.families [--d 256 --layers 8 --batch 8 --seq 64]`.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import header, timed
from dihal.backbone import BackboneAdapter
from dihal.backbone.families.generic import GenericFamily
from tests.tiny import make_model


def main(d: int = 256, layers: int = 8, batch: int = 8, seq: int = 64, repeat: int = 20) -> None:
    torch.manual_seed(0)
    model = make_model("llama", n_layers=layers, d=d, vocab=512)
    fast, generic = BackboneAdapter(model), BackboneAdapter(model, family=GenericFamily)
    ids = torch.randint(3, 512, (batch, seq))
    ids[:, 0] = 1
    hs = fast.hidden_states(ids, list(range(layers + 1)))
    cases = {
        "hidden_states, layers 0..L": lambda ad: ad.hidden_states(ids, list(range(layers + 1))),
        "hidden_states, layers 1..2 (stops)": lambda ad: ad.hidden_states(ids, [1, 2]),
        **{
            f"logits_from(h_{ell}, {ell})": (lambda ad, ell=ell: ad.logits_from(hs[ell], ell))
            for ell in (1, layers // 2, layers - 1)
        },
    }
    header(f"families: tiny Llama d={d}, {layers} blocks, batch {batch} × {seq} tokens, best of {repeat}")
    with torch.inference_mode():
        for label, fn in cases.items():
            t_fast = timed(lambda fn=fn: fn(fast), repeat)
            t_gen = timed(lambda fn=fn: fn(generic), repeat)
            print(
                f"{label:<36} fast {t_fast * 1e3:8.2f} ms   generic {t_gen * 1e3:8.2f} ms   "
                f"slowdown {t_gen / t_fast:5.2f}x"
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--repeat", type=int, default=20)
    a = p.parse_args()
    main(a.d, a.layers, a.batch, a.seq, a.repeat)
