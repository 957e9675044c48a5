"""The judge of generated text: the full, unmodified backbone, scoring only the generated positions.

Shared by the evaluate stage (the bridge's samples) and the reference stage (the backbone's own samples and
held-out text), so every generative perplexity and every MAUVE feature in the ledger comes from the very same
function. One forward pass gives both: the NLL of the generated tokens and, per sequence, the final-normed last
hidden state at the last position, the text's embedding for MAUVE (`dihal.analysis.mauve_metric`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


class Verdict(NamedTuple):
    total_nll: float  # summed NLL (nats) of positions prefix..T-1
    n_tokens: int  # how many positions that is
    features: np.ndarray  # (sequences, d) float32: h_L after the final norm at the last position


@torch.no_grad()
def judge(adapter, tokens: torch.Tensor, prefix: int, batch: int = 16) -> Verdict:
    """The judge's verdict on `tokens` (sequences of equal length): NLL of the generated positions and each
    sequence's MAUVE features, from one forward pass per batch."""
    total, n, feats = 0.0, 0, []
    for i in range(0, len(tokens), batch):
        tb = tokens[i : i + batch].to(adapter.device)
        logits, final = adapter.logits_and_final_states(tb)
        logits = logits.float().cpu()[:, prefix - 1 : -1]
        target = tb[:, prefix:].cpu()
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        n += target.numel()
        feats.append(final[:, -1].float().cpu().numpy())
    d = adapter.d
    return Verdict(total, n, np.concatenate(feats) if feats else np.zeros((0, d), np.float32))
