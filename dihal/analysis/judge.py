"""The judge of generated text: the full, unmodified backbone, scoring only the generated positions.

Shared by the evaluate stage (the bridge's samples) and the reference stage (the backbone's own samples and
held-out text), so every generative perplexity in the ledger comes from the very same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def judge_nll(adapter, tokens: torch.Tensor, prefix: int, batch: int = 16) -> tuple[float, int]:
    """Total NLL of the generated tokens (positions prefix..T-1) under the full backbone."""
    total, n = 0.0, 0
    for i in range(0, len(tokens), batch):
        tb = tokens[i : i + batch].to(adapter.device)
        logits = adapter.logits(tb).float().cpu()[:, prefix - 1 : -1]
        target = tb[:, prefix:].cpu()
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        n += target.numel()
    return total, n
