"""Variance-preserving noise schedules, as pure functions of t.

The forward process is x_t = alpha(t) * x0 + sigma(t) * eps with alpha^2 + sigma^2 = 1, and a schedule
is the angle phi(t) with alpha = cos(phi), sigma = sin(phi). Two are provided (`NoiseSchedule` names
one for a spec; `NoiseSchedule("cosine")` is the default and evaluates exactly `alpha_sigma` below):

- "cosine": the truncated-angle cosine described next;
- "shifted_cosine" with shift s > 0: the same curve with its signal-to-noise ratio divided by s^2 at
  every t, SNR(t) = SNR_cosine(t) / s^2, i.e. tan(phi_s(t)) = s * tan(phi(t)) (the shifted cosine of
  Hoogeboom et al. 2023, "simple diffusion"). s > 1 spends more of [0, 1] at high noise, which TEncDM
  (Shabalin et al. 2024) found necessary for redundant encodings such as a pretrained model's hidden
  states: at moderate noise the clean sequence is still easy to read off them, so the network learns
  little there. The endpoints stay exact: phi_s(0) = 0, and alpha(1) = cos(atan(s tan(phi(1)))) > 0
  (about ALPHA_MIN / s for s > 1).

Endpoint convention (the "truncated angle" cosine):

    phi(t)   = t * arccos(ALPHA_MIN)
    alpha(t) = cos(phi(t)),   sigma(t) = sin(phi(t))

so alpha(0) = 1 and sigma(0) = 0 exactly (t = 0 is the clean data, and the last DDIM
step lands on x0_hat bit for bit), while alpha(1) = ALPHA_MIN > 0 instead of 0. The pure
cosine alpha(1) = 0 would make the eps -> x0 conversion x0 = (x_t - sigma eps) / alpha
divide by zero at the first sampling step; ALPHA_MIN = 1e-2 keeps that factor at most
100 while leaving a signal-to-noise ratio of 1e-4 at t = 1, so starting sampling from
N(0, I) is a negligible mismatch for standardised (unit variance) targets. Truncating the
angle rather than clipping t keeps alpha strictly decreasing on all of [0, 1] and
alpha^2 + sigma^2 = 1 to rounding, which clipping alpha alone would break.

sigma(t) is only 0 at t = 0, so the x0 -> eps conversion (dividing by sigma) is valid at
every t the sampler evaluates the network at (t > 0); the sampler never asks for it at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA_MIN = 1e-2
"""alpha(1): the signal left at the end of the forward process (see module docstring)."""


def _as_time(t: torch.Tensor | float) -> torch.Tensor:
    t = torch.as_tensor(t)
    if not torch.is_floating_point(t):
        # Integer "times" are almost always a bug (a step index passed instead of t).
        raise TypeError(f"t must be a floating-point tensor, got dtype {t.dtype}")
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
        bad = t[~((t >= 0) & (t <= 1))].flatten()[:5].tolist()
        raise ValueError(f"t must lie in [0, 1] (NaN is rejected too); got values such as {bad}")
    return t


def phi(t: torch.Tensor | float, *, alpha_min: float = ALPHA_MIN) -> torch.Tensor:
    """The angle with alpha = cos(phi); exposed because it is the natural coordinate of the
    VP circle (v-prediction is the derivative of x_t along it)."""
    if not 0.0 < alpha_min < 1.0:
        raise ValueError(f"alpha_min must lie in (0, 1), got {alpha_min}")
    return _as_time(t) * math.acos(alpha_min)


def alpha_sigma(t: torch.Tensor | float, *, alpha_min: float = ALPHA_MIN) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha(t), sigma(t)) in t's dtype and shape; compute on float64 t when the rounding of
    alpha^2 + sigma^2 = 1 matters (the sampler does)."""
    angle = phi(t, alpha_min=alpha_min)
    return torch.cos(angle), torch.sin(angle)


def time_grid(steps: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The uniform sampling grid 1 = t_0 > t_1 > ... > t_steps = 0 (steps + 1 points).

    float64 by default so that t_steps is exactly 0 and the grid is the same on every
    machine regardless of the model's dtype."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype)


def shifted_cosine_angle(t: torch.Tensor | float, shift: float) -> torch.Tensor:
    """phi_s(t) = atan(shift * tan(phi(t))): the cosine's SNR divided by shift^2 (module docstring).

    Strictly increasing in t for every shift > 0, 0 at t = 0 exactly, below pi/2 at t = 1."""
    _check_shift(shift)
    return torch.atan(shift * torch.tan(phi(t)))


MAX_SHIFT = 100.0
"""The largest shift: alpha(1) is then about ALPHA_MIN / 100 = 1e-4. Far beyond it, float32's atan rounds the
angle at t = 1 up to pi/2 and cos() of that is negative -- no signal, and a sign flip where eps is converted."""


def _check_shift(shift: float) -> None:
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive finite number, got {shift!r}")
    if shift > MAX_SHIFT:
        raise ValueError(f"shift must be at most {MAX_SHIFT:g} (alpha(1) ~ {ALPHA_MIN:g} / shift), got {shift!r}")


SCHEDULES = ("cosine", "shifted_cosine")


@dataclass(frozen=True)
class NoiseSchedule:
    """A schedule by name and parameter, as a spec chooses it; bad parameters are errors, never adjusted.

    `shift` belongs to "shifted_cosine" only: the cosine takes none, so a cosine with a shift other than 1
    is refused rather than ignored."""

    name: str = "cosine"
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.name!r}")
        _check_shift(self.shift)
        if self.name == "cosine" and self.shift != 1.0:
            raise ValueError(f"shift is only used by the shifted_cosine schedule; cosine got shift={self.shift!r}")

    def angle(self, t: torch.Tensor | float) -> torch.Tensor:
        return phi(t) if self.name == "cosine" else shifted_cosine_angle(t, self.shift)

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha(t), sigma(t)); for the cosine exactly `alpha_sigma(t)`, bit for bit."""
        if self.name == "cosine":
            return alpha_sigma(t)
        angle = self.angle(t)
        return torch.cos(angle), torch.sin(angle)

    def matching_time(self, t: torch.Tensor | float) -> torch.Tensor:
        """The time at which this schedule has the noise level the cosine has at `t`.

        Evaluation measures every bridge at the cosine's noise levels (eval.t_grid, eval.recovery_t), so
        that losses of bridges trained under different schedules compare like with like. Identity for the
        cosine. A shift below 1 never reaches the cosine's highest noise levels; asking for one is an error."""
        t = _as_time(t)
        if self.name == "cosine":
            return t
        matched = torch.atan(torch.tan(phi(t)) / self.shift) / math.acos(ALPHA_MIN)
        beyond = matched > 1 + 1e-9  # rounding at t = 1 may overshoot 1 by an ulp; that is clamped below
        if bool(beyond.any()):
            raise ValueError(
                f"shifted_cosine with shift {self.shift} does not reach the cosine's noise level at t = "
                f"{float(t.flatten()[beyond.flatten()][0]):g}; use a shift >= 1"
            )
        return matched.clamp(max=1.0)

    def to_dict(self) -> dict:
        return {"name": self.name, "shift": self.shift}


COSINE = NoiseSchedule()
"""The default schedule, and the one every bridge saved before schedules were a choice was trained with."""
