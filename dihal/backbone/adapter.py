"""A uniform view of a causal LM as embed → blocks → final norm → LM head.

DiHAL cuts the block stack at a layer ℓ, so the forward pass is written here as an
explicit loop over blocks (nanoGPT style) instead of hooks into HF's forward: the
lower part (`run_blocks(h, 0, ℓ)`) produces `h_ℓ`, the upper part
(`run_blocks(h, ℓ, L)` then `head`) turns it into logits, and extraction simply
stops at the deepest layer it needs. `h_ℓ` is the residual stream leaving block ℓ,
before any final norm (HF's last `hidden_states` slot is already normed).

Only full-causal, unpadded, fixed-length sequences are needed (every sequence
starts with BOS), which keeps the attention mask a plain 4-D additive mask that
every attention implementation accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
SUPPORTED = (*LLAMA_FAMILY, "gpt2")


class UnsupportedArchitecture(ValueError):
    pass


@dataclass
class PositionContext:
    """Everything position-dependent a block needs, built once per (length, batch) shape."""

    position_ids: torch.Tensor
    mask: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)


class BackboneAdapter:
    """Wraps a loaded HF causal LM. Layers are 1-indexed as in METHOD.md: block ℓ produces h_ℓ."""

    def __init__(self, model: nn.Module):
        model_type = getattr(model.config, "model_type", type(model).__name__)
        if model_type not in SUPPORTED:
            raise UnsupportedArchitecture(
                f"architecture {model_type!r} ({type(model).__name__}) is not supported; "
                f"dihal knows how to split: {', '.join(SUPPORTED)}"
            )
        self.model = model.eval()
        self.model_type = model_type
        if model_type == "gpt2":
            core = model.transformer
            self.blocks = list(core.h)
            self.final_norm = core.ln_f
        else:
            core = model.model
            self.blocks = list(core.layers)
            self.final_norm = core.norm
        self.core = core
        self.lm_head = model.lm_head
        for p in model.parameters():
            p.requires_grad_(False)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d(self) -> int:
        return int(self.model.config.hidden_size if self.model_type != "gpt2" else self.model.config.n_embd)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # -- pieces -----------------------------------------------------------------
    def positions(self, batch: int, length: int) -> PositionContext:
        dev, dt = self.device, self.dtype
        pos = torch.arange(length, device=dev).unsqueeze(0).expand(batch, -1)
        causal = torch.full((length, length), torch.finfo(dt).min, device=dev, dtype=dt).triu(1)
        mask = causal[None, None].expand(batch, 1, length, length)
        rotary = None
        if self.model_type != "gpt2":
            probe = torch.empty(batch, length, self.d, device=dev, dtype=dt)
            rotary = self.core.rotary_emb(probe, position_ids=pos)
        return PositionContext(position_ids=pos, mask=mask, rotary=rotary)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """h_0: the input of block 1 (token embeddings, plus learned positions for GPT-2)."""
        if self.model_type == "gpt2":
            pos = torch.arange(ids.shape[1], device=ids.device)
            return self.core.drop(self.core.wte(ids) + self.core.wpe(pos)[None])
        return self.core.embed_tokens(ids)

    def block(self, index: int, h: torch.Tensor, ctx: PositionContext) -> torch.Tensor:
        """Apply block `index` (1-based), producing h_index from h_{index-1}."""
        blk = self.blocks[index - 1]
        if self.model_type == "gpt2":
            out = blk(h, attention_mask=ctx.mask)
        else:
            out = blk(h, attention_mask=ctx.mask, position_ids=ctx.position_ids, position_embeddings=ctx.rotary)
        return out[0] if isinstance(out, tuple) else out

    def run_blocks(self, h: torch.Tensor, start: int, stop: int, ctx: PositionContext | None = None) -> torch.Tensor:
        """h_start → h_stop by blocks start+1..stop."""
        if not 0 <= start <= stop <= self.n_layers:
            raise ValueError(f"need 0 <= start <= stop <= {self.n_layers}, got start={start}, stop={stop}")
        ctx = ctx or self.positions(h.shape[0], h.shape[1])
        for i in range(start + 1, stop + 1):
            h = self.block(i, h, ctx)
        return h

    def head(self, h_last: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head on h_L."""
        return self.lm_head(self.final_norm(h_last))

    # -- compositions --------------------------------------------------------------
    @torch.no_grad()
    def hidden_states(self, ids: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        """h_ℓ for the requested layers, running only blocks 1..max(layers)."""
        wanted = set(layers)
        if not wanted:
            return {}
        top = max(wanted)
        if min(wanted) < 0 or top > self.n_layers:
            raise ValueError(f"layers must lie in 0..{self.n_layers}, got {sorted(wanted)}")
        ctx = self.positions(ids.shape[0], ids.shape[1])
        h = self.embed(ids)
        out = {0: h} if 0 in wanted else {}
        for i in range(1, top + 1):
            h = self.block(i, h, ctx)
            if i in wanted:
                out[i] = h
        return out

    @torch.no_grad()
    def logits_from(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits of the retained upper stack fed h_layer (the hybrid's decoder)."""
        return self.head(self.run_blocks(h, layer, self.n_layers))

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits_from(self.embed(ids), 0)
