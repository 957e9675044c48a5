"""Forward process, objectives, losses and the DDIM sampler of the bridge.

Everything is in terms of a VP schedule of dihal.bridge.schedule (`schedule`, the cosine unless
given) and works on any (B, T, d) sequence of vectors. Conditioning is by in-painting: positions where
clamp_mask is True hold the clean x0 (never noise) whenever the network sees them, in
training and in sampling alike, so the network only ever learns the conditional it is
asked for at sampling time.

Objectives say what the network output means:
    "x0":  x0 itself;
    "eps": the noise, x0 = (x_t - sigma eps) / alpha (alpha >= alpha(1) > 0, never 0);
    "v":   alpha eps - sigma x0, x0 = alpha x_t - sigma v (no division at all).

Self-conditioning (`self_condition=True`, for a denoiser built with it): the network's x0 estimate
is fed back as an extra input. In training the loop decides per step whether the network first
estimates x0 from x_t alone (no gradient through that pass) and is then trained on that estimate;
single-step measurements (`model_x0`, `x0_mse`) make the same two passes; the DDIM sampler feeds
each step the previous step's estimate, none at the first. Estimates carry the clean values at
clamped positions, as x_t does.
"""

from __future__ import annotations

import torch
from torch import nn

from dihal.bridge.schedule import COSINE, NoiseSchedule, time_grid

OBJECTIVES = ("x0", "eps", "v")


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _coeffs(t: torch.Tensor, like: torch.Tensor, schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha, sigma of a (B,) time tensor, shaped (B, 1, 1) to broadcast over (B, T, d)."""
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must have shape ({like.shape[0]},), got {tuple(t.shape)}")
    alpha, sigma = schedule.alpha_sigma(t)
    return alpha.to(like.dtype)[:, None, None], sigma.to(like.dtype)[:, None, None]


def _check_mask(clamp_mask: torch.Tensor, x: torch.Tensor) -> None:
    if clamp_mask.dtype != torch.bool or clamp_mask.shape != x.shape[:2]:
        raise ValueError(
            f"clamp_mask must be a bool {tuple(x.shape[:2])} tensor, got {clamp_mask.dtype} {tuple(clamp_mask.shape)}"
        )


def prefix_mask(batch: int, length: int, prefix: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, length) bool clamp mask with the first `prefix` positions clamped.

    The one place this mask is built: training, validation loss, recovery and sampling must
    all clamp the same positions, or the bridge is evaluated on a conditional it never learned."""
    if not 0 <= prefix < length:
        raise ValueError(
            f"prefix must be in [0, T) = [0, {length}), got {prefix}: at least one position has to be generated"
        )
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
    mask[:, :prefix] = True
    return mask


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule = COSINE) -> torch.Tensor:
    """x_t = alpha(t) x0 + sigma(t) noise, with t of shape (B,)."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    alpha, sigma = _coeffs(t, x0, schedule)
    return alpha * x0 + sigma * noise


def inpaint(x: torch.Tensor, clean: torch.Tensor, clamp_mask: torch.Tensor) -> torch.Tensor:
    """x with its clamped positions replaced by `clean`, bit for bit."""
    return torch.where(clamp_mask[..., None], clean, x)


def objective_target(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, objective: str, schedule: NoiseSchedule = COSINE
) -> torch.Tensor:
    """What the network is trained to output under `objective`."""
    _check_objective(objective)
    if objective == "x0":
        return x0
    if objective == "eps":
        return noise
    alpha, sigma = _coeffs(t, x0, schedule)
    return alpha * noise - sigma * x0


def _network(
    denoiser: nn.Module, x_t: torch.Tensor, t: torch.Tensor, clamp_mask: torch.Tensor, x0_self: torch.Tensor | None
) -> torch.Tensor:
    """One network call; the self-conditioning input is passed only when there is one, so any
    f(x_t, t, clamp_mask) module serves as a denoiser without it."""
    out = denoiser(x_t, t, clamp_mask) if x0_self is None else denoiser(x_t, t, clamp_mask, x0_self)
    if out.shape != x_t.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)}, expected {tuple(x_t.shape)}")
    return out


def predict(
    denoiser: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    clamp_mask: torch.Tensor,
    objective: str,
    *,
    schedule: NoiseSchedule = COSINE,
    x0_self: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) from one network call (given `x0_self` as its self-conditioning input).

    Each objective's own quantity is taken as is and only the other one is derived, which
    keeps an exact network exact (an eps oracle yields eps bit for bit). eps_hat under "x0"
    divides by sigma(t), so it is only valid for t > 0 (the sampler never asks at t = 0)."""
    _check_objective(objective)
    out = _network(denoiser, x_t, t, clamp_mask, x0_self)
    alpha, sigma = _coeffs(t, x_t, schedule)
    if objective == "x0":
        return out, (x_t - alpha * out) / sigma
    if objective == "eps":
        return (x_t - sigma * out) / alpha, out
    return alpha * x_t - sigma * out, sigma * x_t + alpha * out


def model_x0(
    denoiser: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    clamp_mask: torch.Tensor,
    objective: str,
    *,
    schedule: NoiseSchedule = COSINE,
    self_condition: bool = False,
) -> torch.Tensor:
    """The network's estimate of x0, whatever its objective (valid for every t in [0, 1]); with
    self_condition, the second of two passes, fed the first's estimate."""
    _check_objective(objective)
    x0_self = self_condition_input(denoiser, x_t, t, clamp_mask, objective, schedule) if self_condition else None
    out = _network(denoiser, x_t, t, clamp_mask, x0_self)
    if objective == "x0":
        return out
    alpha, sigma = _coeffs(t, x_t, schedule)
    if objective == "eps":
        return (x_t - sigma * out) / alpha
    return alpha * x_t - sigma * out


def masked_mse(a: torch.Tensor, b: torch.Tensor, clamp_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the unclamped positions (and all d dims) only.

    Clamped positions are given, not generated: counting them would reward the network for
    copying its input and dilute the loss by the prefix fraction."""
    keep = (~clamp_mask)[..., None].to(a.dtype)
    count = keep.sum() * a.shape[-1]
    if count == 0:
        raise ValueError("every position is clamped: there is nothing to denoise")
    return (((a - b) ** 2) * keep).sum() / count


def noised_input(
    x0: torch.Tensor,
    clamp_mask: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    schedule: NoiseSchedule = COSINE,
) -> torch.Tensor:
    """What the network sees at time t: x0 noised by the forward process, clamped positions clean.

    Shared by the training loss, the validation loss and recovery, so all three corrupt x0 the same way."""
    _check_mask(clamp_mask, x0)
    return inpaint(q_sample(x0, t, noise, schedule), x0, clamp_mask)


@torch.no_grad()
def self_condition_input(
    denoiser: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    clamp_mask: torch.Tensor,
    objective: str,
    schedule: NoiseSchedule = COSINE,
) -> torch.Tensor:
    """The first pass of self-conditioning: the network's x0 estimate from x_t alone, without gradient
    (Analog Bits trains through the second pass only), clamped positions holding x_t's clean values."""
    x0_hat = model_x0(denoiser, x_t, t, clamp_mask, objective, schedule=schedule)
    return inpaint(x0_hat, x_t, clamp_mask)


def training_loss(
    denoiser: nn.Module,
    x0: torch.Tensor,
    clamp_mask: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    objective: str = "x0",
    *,
    schedule: NoiseSchedule = COSINE,
    self_condition: bool = False,
) -> torch.Tensor:
    """MSE of the network output against the objective's target on unclamped positions.

    t and noise are arguments, not drawn here, so the caller owns all randomness (the
    training loop draws them from its own generator, and the coin that sets `self_condition`
    for a step; evaluation uses a fixed grid). With self_condition the output is the second
    pass, fed the first pass's estimate."""
    _check_objective(objective)
    x_t = noised_input(x0, clamp_mask, t, noise, schedule)
    x0_self = self_condition_input(denoiser, x_t, t, clamp_mask, objective, schedule) if self_condition else None
    out = _network(denoiser, x_t, t, clamp_mask, x0_self)
    return masked_mse(out, objective_target(x0, noise, t, objective, schedule), clamp_mask)


@torch.no_grad()
def x0_mse(
    denoiser: nn.Module,
    x0: torch.Tensor,
    clamp_mask: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    objective: str,
    *,
    schedule: NoiseSchedule = COSINE,
    self_condition: bool = False,
) -> torch.Tensor:
    """x0-MSE of the x0 estimate on unclamped positions: the one metric comparable across
    objectives (their training losses live on different scales). No gradients."""
    x_t = noised_input(x0, clamp_mask, t, noise, schedule)
    estimate = model_x0(denoiser, x_t, t, clamp_mask, objective, schedule=schedule, self_condition=self_condition)
    return masked_mse(estimate, x0, clamp_mask)


@torch.no_grad()
def ddim_sample(
    denoiser: nn.Module,
    *,
    clamp_values: torch.Tensor,
    clamp_mask: torch.Tensor,
    steps: int = 50,
    objective: str = "x0",
    schedule: NoiseSchedule = COSINE,
    self_condition: bool = False,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM (eta = 0) from t = 1 to t = 0 on the uniform grid of `steps` steps.

    x_1 ~ N(0, I) is drawn from `generator`; None means a fresh generator seeded 0 (the
    global RNG is never used, so sampling is reproducible by default; pass your own
    generator for different draws). Each step maps x_t to
    x_s = alpha_s x0_hat + sigma_s eps_hat, and clamped positions are overwritten with
    clamp_values before every network call and after every step, so they come out
    bit-identical. The last step has alpha = 1, sigma = 0 exactly and returns x0_hat.
    With self_condition, every step after the first is fed the previous step's x0_hat
    (clamped positions clean), one network call per step as without it.

    With return_trajectory, also returns the (steps + 1, B, T, d) stack of states from the
    (clamped) start x_1 to the output. Values of clamp_values at unclamped positions are
    ignored.
    """
    _check_objective(objective)
    if clamp_values.ndim != 3:
        raise ValueError(f"clamp_values must be (B, T, d), got {tuple(clamp_values.shape)}")
    _check_mask(clamp_mask, clamp_values)
    if not bool(torch.isfinite(clamp_values[clamp_mask]).all()):
        raise ValueError("clamp_values are not finite at clamped positions")
    grid = time_grid(steps)
    alphas, sigmas = schedule.alpha_sigma(grid)  # float64, so the endpoints are exact
    if generator is None:
        generator = torch.Generator(device=clamp_values.device).manual_seed(0)
    dtype, device = clamp_values.dtype, clamp_values.device
    x = torch.randn(clamp_values.shape, generator=generator, dtype=dtype, device=device)
    x = inpaint(x, clamp_values, clamp_mask)
    trajectory = [x] if return_trajectory else None
    batch = clamp_values.shape[0]
    x0_self = None
    for i in range(steps):
        t = torch.full((batch,), float(grid[i]), dtype=dtype, device=device)
        x0_hat, eps_hat = predict(denoiser, x, t, clamp_mask, objective, schedule=schedule, x0_self=x0_self)
        if self_condition:
            x0_self = inpaint(x0_hat, clamp_values, clamp_mask)
        a_s, s_s = float(alphas[i + 1]), float(sigmas[i + 1])
        x = x0_hat if i == steps - 1 else a_s * x0_hat + s_s * eps_hat
        x = inpaint(x, clamp_values, clamp_mask)
        if trajectory is not None:
            trajectory.append(x)
    if trajectory is not None:
        return x, torch.stack(trajectory)
    return x
