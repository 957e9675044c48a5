"""Bridge training throughput, and hybrid generation vs the backbone's own generate().

Generation: n sequences of length T from the hybrid (DDIM, S steps, then blocks ℓ+1..L and the
head) against `model.generate` of the same number of tokens, greedy. Both wall times are
printed with their ratio, whichever way it goes.
"""

from __future__ import annotations

import time

import torch

from bench.common import embedded, header, timed
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.hybrid import HybridLM
from dihal.bridge.standardize import Standardizer
from dihal.bridge.train import TrainConfig, train_denoiser
from dihal.data.tokens import resolve_block_start


def main(layer: int = 12, n: int = 16, seq_len: int = 64, steps: int = 50, train_steps: int = 60) -> None:
    bb, ad = embedded()
    header("bridge training (defaults: d_model 128, depth 3, heads 4, batch 32, T 64)")
    x0 = torch.randn(512, seq_len, ad.d, generator=torch.Generator().manual_seed(0))
    den = Denoiser(d_in=ad.d, max_len=seq_len)
    t = time.perf_counter()
    train_denoiser(den, x0, TrainConfig(steps=train_steps, warmup=5, batch_size=32), progress=False)
    dt = time.perf_counter() - t
    print(f"{train_steps / dt:.1f} steps/s, {train_steps * 32 * seq_len / dt:.0f} tokens/s")

    header(f"generation: {n} sequences × {seq_len} tokens at layer {layer}, {steps} DDIM steps")
    std = Standardizer(mean=torch.zeros(ad.d), std=torch.ones(ad.d))
    hybrid = HybridLM(ad, layer, den.eval(), std, seq_len=seq_len)
    prompt = torch.full((n, 1), resolve_block_start(bb.tokenizer).id)
    t_h = timed(lambda: hybrid.sample(prompt, steps=steps, generator=torch.Generator().manual_seed(0)), repeat=2)

    def hf():
        with torch.inference_mode():
            bb.model.generate(
                prompt,
                max_new_tokens=seq_len - 1,
                min_new_tokens=seq_len - 1,
                do_sample=False,
                pad_token_id=bb.tokenizer.eos_token_id,
            )

    t_g = timed(hf, repeat=2)
    print(f"hybrid sample()        : {t_h:6.2f} s")
    print(f"backbone generate()    : {t_g:6.2f} s")
    print(f"ratio hybrid/generate  : {t_h / t_g:6.2f}x ({'slower' if t_h > t_g else 'faster'})")


if __name__ == "__main__":
    main()
