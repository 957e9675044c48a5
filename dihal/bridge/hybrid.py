"""DiffusionLM: a denoiser that generates an interface's states, and the interface that turns them into tokens.

HybridLM is dihal's own case: the bridge generates the standardised layer-ℓ hidden-state sequence in place of
the embeddings and blocks 1..ℓ; the backbone's own blocks ℓ+1..L, final norm and LM head (frozen, shared with
the backbone object, never copied) turn it into logits. Position i's logits give the token at i+1, exactly as
in the backbone, so feeding the true h_ℓ reproduces the backbone's logits -- the test that the splice is right.

The C3 baselines (`dihal.interfaces`) are DiffusionLMs with another interface: the same denoiser, sampler,
prefix clamp and decoding rule, so a difference between them is the interface's and nothing else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dihal.backbone.adapter import BackboneAdapter
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.diffusion import ddim_sample, prefix_mask
from dihal.bridge.schedule import COSINE, NoiseSchedule
from dihal.bridge.standardize import Standardizer
from dihal.interfaces import interface_from_state
from dihal.interfaces.base import Interface
from dihal.interfaces.hidden import HiddenInterface


@dataclass
class Generation:
    states: torch.Tensor  # (B, T, w) de-standardised interface states
    logits: torch.Tensor  # (B, T, V)
    tokens: torch.Tensor  # (B, T): BOS/prompt, then the decoded continuation
    prefix: int


class DiffusionLM(torch.nn.Module):
    def __init__(
        self,
        interface: Interface,
        denoiser: Denoiser,
        standardizer: Standardizer,
        *,
        objective: str = "x0",
        seq_len: int = 64,
        schedule: NoiseSchedule = COSINE,
    ):
        super().__init__()
        self.interface = interface
        self.denoiser = denoiser
        self.standardizer = standardizer
        self.objective = objective
        self.seq_len = seq_len
        self.schedule = schedule

    @property
    def self_condition(self) -> bool:
        """Whether the denoiser takes its own x0 estimate as input (a property of how it was built)."""
        return bool(getattr(self.denoiser, "self_condition", False))

    @property
    def adapter(self) -> BackboneAdapter:
        return self.interface.adapter

    @property
    def layer(self) -> int:
        return self.interface.layer

    @classmethod
    def load(cls, path: Path | str, adapter: BackboneAdapter) -> DiffusionLM:
        """A saved bridge or baseline; files from before interfaces (or schedules) existed are hidden-state
        bridges (trained under the cosine schedule)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        den = Denoiser(**blob["denoiser_config"])
        den.load_state_dict(blob["denoiser"])
        den.eval()
        std = Standardizer.from_state_dict(blob["standardizer"])
        saved = blob.get("interface") or {"name": "hidden", "state": {"layer": blob["layer"]}}
        return DiffusionLM(
            interface_from_state(adapter, saved),
            den.to(adapter.device),
            std,
            objective=blob["objective"],
            seq_len=blob["seq_len"],
            schedule=NoiseSchedule(**blob.get("schedule", COSINE.to_dict())),
        )

    def decode(self, states: torch.Tensor) -> torch.Tensor:
        """Logits from de-standardised interface states (float32, CPU)."""
        return self.interface.logits(states)

    @torch.no_grad()
    def sample(
        self,
        prompt_ids: torch.Tensor,
        *,
        steps: int = 50,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Generation:
        """Generate (B, seq_len) tokens continuing `prompt_ids` (B, p), BOS first.

        The prompt's true states are clamped as the prefix at every DDIM step; each generated token is the
        argmax, or a temperature sample, of the logits that score it (`Interface.token_logits`).
        """
        b, p = prompt_ids.shape
        if not 1 <= p < self.seq_len:
            raise ValueError(f"prompt length must be in 1..{self.seq_len - 1}, got {p}")
        d = self.standardizer.mean.shape[-1]
        clamp = torch.zeros(b, self.seq_len, d)
        prompt_states = self.interface.clean(prompt_ids)
        clamp[:, :p] = self.standardizer.transform(prompt_states)
        mask = prefix_mask(b, self.seq_len, p)
        dev = self.adapter.device
        generator = generator or torch.Generator().manual_seed(0)  # never the global RNG
        noise_gen = generator
        if dev.type != "cpu":  # DDIM draws its start noise on the clamp's device
            noise_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        x = ddim_sample(
            self.denoiser,
            clamp_values=clamp.to(dev),
            clamp_mask=mask.to(dev),
            steps=steps,
            objective=self.objective,
            schedule=self.schedule,
            self_condition=self.self_condition,
            generator=noise_gen,
        )
        states = self.standardizer.inverse(x.cpu())
        states[:, :p] = prompt_states  # exact, not round-tripped through the standardiser
        logits = self.decode(states)
        tokens = torch.empty(b, self.seq_len, dtype=torch.long)
        tokens[:, :p] = prompt_ids.cpu()
        s = self.interface.shift
        nxt = logits[:, p - s : self.seq_len - s]
        if temperature > 0:
            probs = torch.softmax(nxt / temperature, dim=-1)
            tokens[:, p:] = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(b, -1)
        else:
            tokens[:, p:] = nxt.argmax(-1)
        return Generation(states=states, logits=logits, tokens=tokens, prefix=p)


class HybridLM(DiffusionLM):
    """The hidden-state bridge spliced under blocks ℓ+1..L."""

    def __init__(
        self,
        adapter: BackboneAdapter,
        layer: int,
        denoiser: Denoiser,
        standardizer: Standardizer,
        *,
        objective: str = "x0",
        seq_len: int = 64,
        schedule: NoiseSchedule = COSINE,
    ):
        super().__init__(
            HiddenInterface(adapter, layer),
            denoiser,
            standardizer,
            objective=objective,
            seq_len=seq_len,
            schedule=schedule,
        )

    @torch.no_grad()
    def prefix_states(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """True h_ℓ of a prompt; causal attention makes them independent of what follows."""
        ad = self.adapter
        return ad.run_blocks(ad.embed(prompt_ids.to(ad.device)), 0, self.layer)
