"""HybridLM: a diffusion bridge in place of the embeddings and blocks 1..ℓ.

The bridge generates the standardised layer-ℓ hidden-state sequence; the
backbone's own blocks ℓ+1..L, final norm and LM head (frozen, shared with the
backbone object, never copied) turn it into logits. Position i's logits give the
token at i+1, exactly as in the backbone, so feeding the true h_ℓ reproduces the
backbone's logits — the test that the splice is right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dihal.backbone.adapter import BackboneAdapter
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.diffusion import ddim_sample, prefix_mask
from dihal.bridge.standardize import Standardizer


@dataclass
class Generation:
    states: torch.Tensor  # (B, T, d) de-standardised h_ℓ
    logits: torch.Tensor  # (B, T, V)
    tokens: torch.Tensor  # (B, T): BOS/prompt, then the decoded continuation
    prefix: int


class HybridLM(torch.nn.Module):
    def __init__(self, adapter: BackboneAdapter, layer: int, denoiser: Denoiser, standardizer: Standardizer,
                 *, objective: str = "x0", seq_len: int = 64):  # fmt: skip
        super().__init__()
        if not 1 <= layer <= adapter.n_layers:
            raise ValueError(f"layer must lie in 1..{adapter.n_layers}, got {layer}")
        self.adapter = adapter
        self.layer = layer
        self.denoiser = denoiser
        self.standardizer = standardizer
        self.objective = objective
        self.seq_len = seq_len

    @classmethod
    def load(cls, path: Path | str, adapter: BackboneAdapter) -> HybridLM:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        den = Denoiser(**blob["denoiser_config"])
        den.load_state_dict(blob["denoiser"])
        den.eval()
        std = Standardizer.from_state_dict(blob["standardizer"])
        return cls(adapter, blob["layer"], den.to(adapter.device), std, objective=blob["objective"],
                   seq_len=blob["seq_len"])  # fmt: skip

    def frozen_parameters(self) -> list[torch.nn.Parameter]:
        """The retained backbone parts: blocks ℓ+1..L, final norm, LM head."""
        mods = [*self.adapter.blocks[self.layer :], self.adapter.final_norm, self.adapter.lm_head]
        return [p for m in mods for p in m.parameters()]

    @torch.no_grad()
    def prefix_states(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """True h_ℓ of a prompt; causal attention makes them independent of what follows."""
        ad = self.adapter
        return ad.run_blocks(ad.embed(prompt_ids.to(ad.device)), 0, self.layer)

    @torch.no_grad()
    def decode(self, states: torch.Tensor) -> torch.Tensor:
        """Logits from (de-standardised) layer-ℓ states through the retained upper stack."""
        ad = self.adapter
        return ad.logits_from(states.to(device=ad.device, dtype=ad.dtype), self.layer)

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, *, steps: int = 50, temperature: float = 0.0,
               generator: torch.Generator | None = None) -> Generation:  # fmt: skip
        """Generate (B, seq_len) tokens continuing `prompt_ids` (B, p), BOS first.

        The prompt's true states are clamped as the prefix at every DDIM step; the
        token at position i+1 (i >= p-1) is the argmax, or a temperature sample, of
        the logits at i.
        """
        b, p = prompt_ids.shape
        if not 1 <= p < self.seq_len:
            raise ValueError(f"prompt length must be in 1..{self.seq_len - 1}, got {p}")
        d = self.standardizer.mean.shape[-1]
        clamp = torch.zeros(b, self.seq_len, d)
        prompt_states = self.prefix_states(prompt_ids).float().cpu()
        clamp[:, :p] = self.standardizer.transform(prompt_states)
        mask = prefix_mask(b, self.seq_len, p)
        dev = self.adapter.device
        generator = generator or torch.Generator().manual_seed(0)  # never the global RNG
        noise_gen = generator
        if dev.type != "cpu":  # DDIM draws its start noise on the clamp's device
            noise_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        x = ddim_sample(self.denoiser, clamp_values=clamp.to(dev), clamp_mask=mask.to(dev), steps=steps,
                        objective=self.objective, generator=noise_gen)  # fmt: skip
        states = self.standardizer.inverse(x.cpu())
        states[:, :p] = prompt_states  # exact, not round-tripped through the standardiser
        logits = self.decode(states).float().cpu()
        tokens = torch.empty(b, self.seq_len, dtype=torch.long)
        tokens[:, :p] = prompt_ids.cpu()
        nxt = logits[:, p - 1 : -1]
        if temperature > 0:
            probs = torch.softmax(nxt / temperature, dim=-1)
            tokens[:, p:] = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(b, -1)
        else:
            tokens[:, p:] = nxt.argmax(-1)
        return Generation(states=states, logits=logits, tokens=tokens, prefix=p)
