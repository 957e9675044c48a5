"""The backbone's input token embeddings, as the embedding interfaces generate them.

`get_input_embeddings()` is the token table and whatever its module applies (Gemma's sqrt(d) scale), but not
what a family adds afterwards (GPT-2's learned positions): a token's embedding is the same vector wherever it
stands, which is what rounding to the nearest row and a position-free readout assume.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def token_embeddings(adapter, ids: torch.Tensor) -> torch.Tensor:
    emb = adapter.model.get_input_embeddings()
    return emb(ids.to(adapter.device)).float().cpu()


@torch.no_grad()
def embedding_table(adapter, chunk: int = 8192) -> torch.Tensor:
    """(V, d) float32: the embedding of every token id, as `token_embeddings` gives it."""
    n = adapter.model.get_input_embeddings().num_embeddings
    return torch.cat([token_embeddings(adapter, torch.arange(i, min(i + chunk, n))) for i in range(0, n, chunk)])
