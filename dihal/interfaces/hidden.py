"""hidden (dihal): the denoiser generates h_ℓ; the backbone's own blocks ℓ+1..L, final norm and LM head decode.

Nothing is trained for recovery -- the upper stack is the pretrained model's -- so its recovery budget is 0.
The clean states come from the targets stage (stored h_ℓ), not from `clean`, which serves prompts.
"""

from __future__ import annotations

import torch

from dihal.interfaces.base import Interface


class HiddenInterface(Interface):
    name = "hidden"
    shift = 1

    def __init__(self, adapter, layer: int) -> None:
        if not 1 <= layer <= adapter.n_layers:
            raise ValueError(f"layer must lie in 1..{adapter.n_layers}, got {layer}")
        super().__init__(adapter, layer)

    @torch.no_grad()
    def clean(self, ids: torch.Tensor) -> torch.Tensor:
        ad = self.adapter
        return ad.run_blocks(ad.embed(ids.to(ad.device)), 0, self.layer).float().cpu()

    @torch.no_grad()
    def logits(self, states: torch.Tensor) -> torch.Tensor:
        ad = self.adapter
        return ad.logits_from(states.to(device=ad.device, dtype=ad.dtype), self.layer).float().cpu()
