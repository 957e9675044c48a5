"""The backbone's input token embeddings, as the embedding interfaces generate them.

`get_input_embeddings()` is the token table and whatever its module applies (Gemma's sqrt(d) scale), but not
what a family adds afterwards (GPT-2's learned positions): a token's embedding is the same vector wherever it
stands, which is what rounding to the nearest row and a position-free readout assume.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def token_embeddings(adapter, ids: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """float32 CPU embeddings of `ids`, looked up `chunk` rows at a time (a whole training split at once would
    hold its full-precision copy on the device)."""
    emb = adapter.model.get_input_embeddings()
    return torch.cat([emb(ids[i : i + chunk].to(adapter.device)).float().cpu() for i in range(0, len(ids), chunk)])


def embedding_table(adapter) -> torch.Tensor:
    """(V, d) float32: the embedding of every token id, as `token_embeddings` gives it."""
    return token_embeddings(adapter, torch.arange(adapter.model.get_input_embeddings().num_embeddings), chunk=8192)
