"""The Llama-style decoder every other family is written against.

`model.model` holds `embed_tokens`, `layers`, `norm` and a shared `rotary_emb`; `model.lm_head` maps the
final-normed state to logits; a block is called as `block(h, attention_mask, position_ids,
position_embeddings)`. Families that differ override only the pieces that differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class PositionContext:
    """Everything position-dependent a block needs, built once per (length, batch) shape."""

    position_ids: torch.Tensor
    mask: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)


def causal_mask(batch: int, length: int, device, dtype, window: int | None = None) -> torch.Tensor:
    """A 4-D additive causal mask; with `window`, position i also ignores keys older than i - window + 1."""
    big = torch.finfo(dtype).min
    i = torch.arange(length, device=device)
    blocked = i[None, :] > i[:, None]
    if window is not None:
        blocked |= i[None, :] <= i[:, None] - window
    mask = torch.zeros(length, length, device=device, dtype=dtype).masked_fill(blocked, big)
    return mask[None, None].expand(batch, 1, length, length)


class Family:
    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.core, self.blocks, self.final_norm, self.lm_head = self.parts(model)

    def parts(self, model: nn.Module) -> tuple[nn.Module, list[nn.Module], nn.Module, nn.Module]:
        """(core, blocks, final norm, LM head): where a family keeps them is most of what tells families apart."""
        return model.model, list(model.model.layers), model.model.norm, model.lm_head

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.core.embed_tokens(ids)

    def windows(self) -> list[int | None]:
        """Each block's attention window (None: full causal). Qwen2/3 and others mark sliding layers in
        `layer_types` and HF gives those layers a sliding-window mask; a family whose every layer slides
        (Mistral) overrides this."""
        types = getattr(self.config, "layer_types", None)
        window = getattr(self.config, "sliding_window", None)
        if not types or window is None:
            return [None] * len(self.blocks)
        return [int(window) if t == "sliding_attention" else None for t in types]

    def positions(self, batch: int, length: int, device, dtype) -> PositionContext:
        pos = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
        probe = torch.empty(batch, length, self.hidden_size, device=device, dtype=dtype)
        rotary = self.core.rotary_emb(probe, position_ids=pos)
        windows = self.windows()
        masks = {w: causal_mask(batch, length, device, dtype, window=w) for w in set(windows)}
        full = masks.get(None)
        return PositionContext(
            position_ids=pos,
            mask=full if full is not None else causal_mask(batch, length, device, dtype),
            rotary=rotary,
            extra={"windows": windows, "masks": masks},
        )

    def block(self, index: int, h: torch.Tensor, ctx: PositionContext) -> torch.Tensor:
        blk = self.blocks[index - 1]
        mask = ctx.extra["masks"][ctx.extra["windows"][index - 1]] if "masks" in ctx.extra else ctx.mask
        out = blk(h, attention_mask=mask, position_ids=ctx.position_ids, position_embeddings=ctx.rotary)
        return out[0] if isinstance(out, tuple) else out

    def head(self, h_last: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(h_last))
