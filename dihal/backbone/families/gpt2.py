"""GPT-2: `transformer.{wte, wpe, h, ln_f}`, learned positions added to the embeddings, no rotary."""

from __future__ import annotations

import torch

from dihal.backbone.families.base import Family, PositionContext, causal_mask


class GPT2(Family):
    def parts(self, model):
        core = model.transformer
        return core, list(core.h), core.ln_f, model.lm_head

    @property
    def hidden_size(self) -> int:
        return int(self.config.n_embd)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.core.drop(self.core.wte(ids) + self.core.wpe(pos)[None])

    def positions(self, batch: int, length: int, device, dtype) -> PositionContext:
        pos = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
        return PositionContext(position_ids=pos, mask=causal_mask(batch, length, device, dtype))

    def block(self, index: int, h: torch.Tensor, ctx: PositionContext) -> torch.Tensor:
        out = self.blocks[index - 1](h, attention_mask=ctx.mask)
        return out[0] if isinstance(out, tuple) else out


FAMILY = GPT2
