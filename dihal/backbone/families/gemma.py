"""Gemma 1, 2 and 3 (text): the Llama layout with a scaled embedding, per-layer sliding windows and soft-capping.

- h_0 is the token embedding times sqrt(hidden_size), the scale cast to the embedding's dtype first (as HF
  does). transformers 5 keeps the scale inside `embed_tokens` (a `*ScaledWordEmbedding` with an
  `embed_scale` buffer); older versions applied it in the model's forward, so `embed` applies it itself
  only when the embedding module does not.
- Gemma 2 and 3 alternate sliding-window and global attention: each layer gets the mask of its own type
  (`config.layer_types`, else the layer's attention's `sliding_window`); a sliding layer at query i sees
  keys i - sliding_window + 1 .. i (transformers' `sliding_window_overlay`).
- Gemma 3 rotates sliding layers with a separate local rotary embedding (`rope_local_base_freq`) and global
  layers with the global one (possibly scaled): transformers 5 has one `rotary_emb` taking the layer type,
  older versions a separate `rotary_emb_local` and a block taking both tables.
- Gemma 2's attention-logit soft-capping and the pre/post norms (Gemma 3's q/k norms too) live inside the
  block (its attention reads `attn_logit_softcapping` and its own `sliding_window` from the config), so
  calling the block is enough; Gemma 3's attention, in transformers 5, does not soft-cap even when the config
  names a cap, and neither does this loop, since it calls the same block. The final-logit soft-capping
  (`final_logit_softcapping`) is applied by the CausalLM's forward, so `head` applies it.
- Gemma 3 with `use_bidirectional_attention` (EmbeddingGemma-style) attends both ways: full layers see every
  key, sliding layers every key within distance < sliding_window.
"""

from __future__ import annotations

import torch

from dihal.backbone.families.base import Family, PositionContext, causal_mask

FULL, SLIDING = "full_attention", "sliding_attention"


def window_mask(batch: int, length: int, device, dtype, window: int | None, causal: bool = True) -> torch.Tensor:
    """The additive mask of one layer type: causal (optionally windowed), or two-sided within the window."""
    if causal:
        return causal_mask(batch, length, device, dtype, window=window)
    i = torch.arange(length, device=device)
    blocked = torch.zeros(length, length, dtype=torch.bool, device=device)
    if window is not None:
        blocked = (i[None, :] - i[:, None]).abs() >= window
    mask = torch.zeros(length, length, device=device, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)
    return mask[None, None].expand(batch, 1, length, length)


class Gemma(Family):
    """Gemma 1, 2 and 3 (text). What differs between generations is read from the config and the modules:
    Gemma 1 has no `layer_types` (every layer global) and no soft-capping; Gemma 2 one rotary table for all
    layers; Gemma 3 one per layer type."""

    def __init__(self, model):
        super().__init__(model)
        types = getattr(self.config, "layer_types", None)
        if types is None:
            types = [SLIDING if getattr(b.self_attn, "sliding_window", None) else FULL for b in self.blocks]
        self.layer_types: list[str] = list(types)[: len(self.blocks)]
        unknown = set(self.layer_types) - {FULL, SLIDING}
        if unknown:
            raise ValueError(f"unknown Gemma layer types {sorted(unknown)}")
        # Gemma 3 under transformers < 5: a separate local rotary module, and blocks that take both tables
        self.two_tables = hasattr(self.core, "rotary_emb_local")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.core.embed_tokens
        h = emb(ids)
        if not hasattr(emb, "embed_scale"):  # transformers < 5: the scale is applied in the model's forward
            h = h * torch.tensor(self.hidden_size**0.5, dtype=h.dtype)
        return h

    def masks(self, batch: int, length: int, device, dtype) -> dict[str, torch.Tensor]:
        causal = not getattr(self.config, "use_bidirectional_attention", False)
        window = getattr(self.config, "sliding_window", None)
        return {
            kind: window_mask(batch, length, device, dtype, window if kind == SLIDING else None, causal)
            for kind in set(self.layer_types)
        }

    def rotaries(self, probe: torch.Tensor, pos: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        rotary = self.core.rotary_emb
        if self.two_tables:
            return {FULL: rotary(probe, pos), SLIDING: self.core.rotary_emb_local(probe, pos)}
        if hasattr(rotary, "layer_types"):  # Gemma 3: one table per layer type, chosen by an argument
            return {kind: rotary(probe, pos, kind) for kind in set(self.layer_types)}
        table = rotary(probe, pos)
        return {FULL: table, SLIDING: table}

    def positions(self, batch: int, length: int, device, dtype) -> PositionContext:
        pos = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
        probe = torch.empty(batch, length, self.hidden_size, device=device, dtype=dtype)
        masks, rotaries = self.masks(batch, length, device, dtype), self.rotaries(probe, pos)
        kind = FULL if FULL in masks else SLIDING  # the plain fields hold the global layers' (or the only) pair
        return PositionContext(
            position_ids=pos, mask=masks[kind], rotary=rotaries[kind], extra={"masks": masks, "rotaries": rotaries}
        )

    def block(self, index: int, h: torch.Tensor, ctx: PositionContext) -> torch.Tensor:
        kind, blk = self.layer_types[index - 1], self.blocks[index - 1]
        mask, rot = ctx.extra["masks"][kind], ctx.extra["rotaries"]
        if self.two_tables:
            out = blk(
                h,
                position_embeddings_global=rot[FULL],
                position_embeddings_local=rot[SLIDING],
                attention_mask=mask,
                position_ids=ctx.position_ids,
            )
        else:
            out = blk(h, attention_mask=mask, position_ids=ctx.position_ids, position_embeddings=rot[kind])
        return out[0] if isinstance(out, tuple) else out

    def head(self, h_last: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.final_norm(h_last))
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:  # as Gemma2/3ForCausalLM.forward: divide, tanh, multiply
            logits = logits / cap
            logits = torch.tanh(logits)
            logits = logits * cap
        return logits


FAMILY = Gemma
