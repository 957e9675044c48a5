"""Phi-1 / Phi-1.5 / Phi-2: `model.{embed_tokens, layers, final_layernorm, rotary_emb}`, a biased `lm_head`.

Only the final norm's name and the embedding dropout differ from the base; the block — one LayerNorm
feeding attention and MLP in parallel (h + attn(ln h) + mlp(ln h)), partial rotary
(`partial_rotary_factor`, 0.4 to 0.5), optional q/k LayerNorms — takes the base call and does the rest.
"""

from __future__ import annotations

import torch

from dihal.backbone.families.base import Family


class Phi(Family):
    def parts(self, model):
        return model.model, list(model.model.layers), model.model.final_layernorm, model.lm_head

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.core.embed_dropout(self.core.embed_tokens(ids))


FAMILY = Phi
