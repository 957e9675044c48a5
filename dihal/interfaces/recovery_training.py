"""The recovery parts' shared training loop: AdamW with warm-up and cosine decay, batches from one generator.

Both trained recovery parts (the CDCD readout, the LD4LG autoencoder) use it, so their budgets -- steps of
`batch_size` rows -- mean the same thing, and the same inputs and seed give bit-identical weights without
touching anyone else's RNG.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from dihal.utils.progress import bar as progress_bar


def warmup_cosine(step: int, steps: int) -> float:
    """LR multiplier: linear warmup over min(50, steps // 10) steps, then cosine decay to 0."""
    warmup = min(50, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def recovery_budget(report: dict, **extra) -> dict:
    """A fit report as the train stage records it: what the recovery part spent and how well it decodes."""
    return {
        "recovery_steps": report["steps"],
        "recovery_params": report["n_params"],
        "recovery_seconds": report["seconds"],
        "recovery_train_accuracy": report["train_accuracy"],
        "recovery_vocab": report["vocab_size"],
        "recovery_curve": report["curve"],
        **extra,
    }


def train_steps(
    module: nn.Module,
    batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    n: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
    log_every: int,
) -> dict:
    """AdamW (no weight decay) with warmup+cosine; each step draws `batch_size` of `n` rows with replacement."""
    if steps < 1 or batch_size < 1 or n < 1:
        raise ValueError(f"need steps, batch_size and data rows >= 1; got {steps}, {batch_size}, {n}")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    curve, start = [], time.perf_counter()
    module.train()
    bar = progress_bar(range(steps), enabled=progress, desc=type(module).__name__, leave=False)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * warmup_cosine(step, steps)
        idx = torch.randint(n, (batch_size,), generator=gen)
        loss = batch_loss(idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            curve.append({"step": step + 1, "loss": loss.item()})
            bar.set_postfix(loss=f"{curve[-1]['loss']:.4f}")
    module.eval()
    return {
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "curve": curve,
        "n_params": sum(p.numel() for p in params),
    }


def standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (floored at 1e-6) of the rows of `x` (..., d)."""
    x = x.reshape(-1, x.shape[-1]).double()
    return x.mean(0).float(), x.std(0, unbiased=False).clamp_min(1e-6).float()


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, n: int, chunk: int = 4096) -> float:
    """Mean of predict(rows) == target[rows] over all `n` rows, in chunks."""
    hits = sum(
        int((predict(torch.arange(i, min(n, i + chunk))) == target[i : i + chunk]).sum()) for i in range(0, n, chunk)
    )
    return hits / target.numel()
