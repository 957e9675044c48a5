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

import torch
from torch import nn

from dihal.backbone.families.base import PositionContext
from dihal.backbone.support import FAMILIES, UnsupportedArchitecture

SUPPORTED = tuple(FAMILIES)

__all__ = ["BackboneAdapter", "PositionContext", "SUPPORTED", "UnsupportedArchitecture"]


def _execution_device(module: nn.Module) -> torch.device:
    """The device a module computes on: accelerate's execution device where it placed the module with hooks
    (offloaded weights sit on 'meta' there), else its first parameter's device."""
    dev = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if dev is not None:
        return torch.device("cuda", dev) if isinstance(dev, int) else torch.device(dev)
    return next(module.parameters()).device


class BackboneAdapter:
    """Wraps a loaded HF causal LM. Layers are 1-indexed as in METHOD.md: block ℓ produces h_ℓ.

    Where the parts live and how a block is called is the family's business (`dihal.backbone.families`);
    the loop, the cut and the compositions are the same for every family, except for a family that `composes`
    (the generic one: hooks on the model's own forward), which is handed whole compositions instead of being
    called block by block. `family` overrides the choice (a benchmark forcing the generic path)."""

    def __init__(self, model: nn.Module, family=None):
        from dihal.backbone.families import family_for

        self.model = model.eval()
        self.model_type = getattr(model.config, "model_type", type(model).__name__)
        self.family = family(model) if family is not None else family_for(model)
        self.composes = getattr(self.family, "composes", False)
        self.core = self.family.core
        self.blocks = self.family.blocks
        self.final_norm = self.family.final_norm
        self.lm_head = self.family.lm_head
        for p in model.parameters():
            p.requires_grad_(False)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d(self) -> int:
        return self.family.hidden_size

    @property
    def device(self) -> torch.device:
        """Where logits come out: the LM head's device (with a device_map, accelerate's execution device)."""
        return _execution_device(self.lm_head)

    @property
    def embed_device(self) -> torch.device:
        """Where token ids go in: the input embedding's device (differs from `device` under a device_map)."""
        return _execution_device(self.model.get_input_embeddings())

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # -- pieces -----------------------------------------------------------------
    def positions(self, batch: int, length: int) -> PositionContext:
        return self.family.positions(batch, length, self.device, self.dtype)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """h_0: the input of block 1 (token embeddings, with whatever the family adds: positions, a scale)."""
        return self.family.embed(ids.to(self.embed_device))

    def block(self, index: int, h: torch.Tensor, ctx: PositionContext) -> torch.Tensor:
        """Apply block `index` (1-based), producing h_index from h_{index-1}."""
        return self.family.block(index, h, ctx)

    def run_blocks(self, h: torch.Tensor, start: int, stop: int, ctx: PositionContext | None = None) -> torch.Tensor:
        """h_start → h_stop by blocks start+1..stop."""
        if not 0 <= start <= stop <= self.n_layers:
            raise ValueError(f"need 0 <= start <= stop <= {self.n_layers}, got start={start}, stop={stop}")
        if self.composes:
            return self.family.run_blocks(h, start, stop)
        ctx = ctx or self.positions(h.shape[0], h.shape[1])
        for i in range(start + 1, stop + 1):
            h = self.block(i, h, ctx)
        return h

    def head(self, h_last: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head on h_L (and any logit soft-capping the family applies)."""
        return self.family.head(h_last)

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
        if self.composes:
            return self.family.hidden_states(ids, wanted)
        ctx = self.positions(ids.shape[0], ids.shape[1])
        h = self.embed(ids)
        dev = self.device  # a model spread over devices (device_map) hands every state back on one device
        out = {0: h.to(dev)} if 0 in wanted else {}
        for i in range(1, top + 1):
            h = self.block(i, h, ctx)
            if i in wanted:
                out[i] = h.to(dev)
        return out

    @torch.no_grad()
    def logits_from(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits of the retained upper stack fed h_layer (the hybrid's decoder)."""
        if self.composes:
            return self.family.logits_from(h, layer)
        return self.head(self.run_blocks(h, layer, self.n_layers))

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits_from(self.embed(ids), 0)

    @torch.no_grad()
    def logits_and_final_states(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, h_L after the final norm) of one forward pass: the judge's verdict and the features MAUVE
        reads (HF's last hidden state). The logits are computed exactly as `logits` computes them; a family that
        `composes` runs its hooked forward once more for the states."""
        if self.composes:
            h = self.family.hidden_states(ids, {self.n_layers})[self.n_layers]
            return self.logits(ids), self.final_norm(h)
        h = self.run_blocks(self.embed(ids), 0, self.n_layers)
        return self.head(h), self.final_norm(h)
