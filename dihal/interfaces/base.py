"""What a continuous-diffusion interface is: the vectors a denoiser generates, and the way back to tokens.

C3 compares interfaces at one budget, so everything else -- the denoiser, the VP schedule, the DDIM sampler,
the prefix clamp, the standardiser, the metrics and the judge -- is shared code that sees an interface only
through this class. Adding an interface is one module with one subclass (and a line in `dihal.interfaces`).

Two facts about an interface change how the shared code lines states up with tokens:

- `shift`: an LM's hidden state at position i scores the token at i+1 (shift 1); an embedding or a latent of
  token i scores token i itself (shift 0). Generation, recovery and the clean-decode check all slice with it.
- `probabilistic`: rounding to the nearest embedding has no distribution, so no recovery cross-entropy.

Decoders that only know a training vocabulary return -inf for the other tokens; the recovery metrics then
report how many targets were reachable at all (`recovery_coverage`) instead of an infinite cross-entropy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

NO_RECOVERY = {"recovery_steps": 0, "recovery_params": 0, "recovery_seconds": 0.0}  # nothing trained to decode


class Interface(ABC):
    name: ClassVar[str]
    shift: ClassVar[int] = 0
    probabilistic: ClassVar[bool] = True

    def __init__(self, adapter, layer: int = 0) -> None:
        self.adapter = adapter
        self.layer = layer

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @abstractmethod
    def clean(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T, w) float32 on the CPU: the states a perfect denoiser would generate for these tokens. Causal:
        position i depends on tokens 0..i only, so a prompt's states are computable from the prompt alone."""

    @abstractmethod
    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """(B, T, V) float32 on the CPU from (B, T, w) de-standardised states; see `shift` for what they score."""

    @classmethod
    def create(cls, adapter, settings: dict) -> Interface:
        """A new, untrained interface from the train stage's `interface` params (the spec's baselines section)."""
        return cls(adapter)

    def fit(self, train_ids: torch.Tensor, *, specials, seed: int, progress: bool = False) -> dict:
        """Train the recovery part, if any, on the training blocks; returns what it spent (steps, parameters,
        seconds) and how well it decodes clean states."""
        return dict(NO_RECOVERY)

    def state(self) -> dict:
        """What, besides the backbone, rebuilds this interface (saved with the denoiser)."""
        return {"layer": self.layer}

    @classmethod
    def from_state(cls, adapter, state: dict) -> Interface:
        return cls(adapter, state["layer"])

    def clean_batched(self, ids: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """`clean` of a whole split, `batch` blocks at a time (bounded memory on the backbone's device)."""
        return torch.cat([self.clean(ids[i : i + batch]) for i in range(0, len(ids), batch)])

    # -- shared by generation and recovery --------------------------------------------------------------
    def token_logits(self, states: torch.Tensor, prefix: int) -> torch.Tensor:
        """Logits that score the tokens at positions prefix..T-1."""
        t = states.shape[1]
        return self.logits(states)[:, prefix - self.shift : t - self.shift]

    def generated_logits(self, states: torch.Tensor, prefix: int) -> tuple[torch.Tensor, slice]:
        """Logits from generated (unclamped) states only, and the token positions they score: with shift 1 the
        last state scores a token past the block and the first generated token is scored by a clamped state."""
        t = states.shape[1]
        return self.logits(states)[:, prefix : t - self.shift], slice(prefix + self.shift, t)


def covered_ce(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    """Summed cross-entropy over targets the decoder can produce (a finite logit), and how many those are."""
    flat, tgt = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    ok = torch.isfinite(flat.gather(1, tgt[:, None]))[:, 0]
    if not bool(ok.all()):
        flat, tgt = flat[ok], tgt[ok]
    if tgt.numel() == 0:
        return 0.0, 0
    return float(torch.nn.functional.cross_entropy(flat, tgt, reduction="sum")), int(tgt.numel())
