"""Where on [0, 1] the training loop draws its times t: how the training signal is spread over noise levels.

- "uniform": t ~ U(0, 1), one `torch.rand` draw per example (the default, and what every bridge trained
  before this was a choice drew);
- "logit_normal" with loc m and scale s: t = sigmoid(m + s z), z ~ N(0, 1) (Esser et al. 2024, "Scaling
  rectified flow transformers"): most draws land at intermediate t, and m > 0 moves them toward high
  noise (t near 1), where a redundant encoding is hardest to denoise.

The sampler is a pure function of its parameters and the generator it is handed, so the training loop's
single generator still owns every random draw (dihal.bridge.train).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class TimeSampling:
    """A training-time distribution by name and parameters; parameters it does not use must keep their
    defaults (loc 0, scale 1), so a setting that would be ignored is refused instead."""

    name: str = "uniform"
    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.name!r}")
        for field, value in (("loc", self.loc), ("scale", self.scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"time sampling {field} must be a finite number, got {value!r}")
        if self.scale <= 0:
            raise ValueError(f"time sampling scale must be > 0, got {self.scale!r}")
        if self.name == "uniform" and (self.loc, self.scale) != (0.0, 1.0):
            raise ValueError(
                f"loc and scale are only used by logit_normal time sampling; uniform got loc={self.loc!r}, "
                f"scale={self.scale!r}"
            )

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) float32 times in [0, 1] from `generator` (one draw of n numbers, either way)."""
        if self.name == "uniform":
            return torch.rand(n, generator=generator)
        return torch.sigmoid(self.loc + self.scale * torch.randn(n, generator=generator))

    def to_dict(self) -> dict:
        return {"name": self.name, "loc": self.loc, "scale": self.scale}


UNIFORM = TimeSampling()
