"""Variance-preserving cosine noise schedule, as pure functions of t.

The forward process is x_t = alpha(t) * x0 + sigma(t) * eps with alpha^2 + sigma^2 = 1.

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
