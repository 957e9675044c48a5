"""GPT-NeoX / Pythia: `gpt_neox.{embed_in, layers, final_layer_norm, rotary_emb}` and the LM head.

What differs from the base is only where the parts live: the layer (transformers 5.x) takes the same
`(h, attention_mask, position_ids, position_embeddings)` call and does the rest itself — the parallel
residual (`use_parallel_residual`: h + attn(ln1 h) + mlp(ln2 h), else the sequential form) and the partial
rotary (`rotary_pct` → `partial_rotary_factor`: only the first fraction of each head's dims is rotated; the
shared rotary module already returns cos/sin of that width). Old checkpoints name the head `embed_out`;
transformers renames it to `lm_head` on load, and a model that still has `embed_out` is read from there.
"""

from __future__ import annotations

import torch

from dihal.backbone.families.base import Family


class GPTNeoX(Family):
    def parts(self, model):
        core = model.gpt_neox
        return (
            core,
            list(core.layers),
            core.final_layer_norm,
            (model.lm_head if hasattr(model, "lm_head") else model.embed_out),
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.core.emb_dropout(self.core.embed_in(ids))


FAMILY = GPTNeoX
