"""Schedule, standardizer, denoiser and sampler of the diffusion bridge."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dihal.bridge.denoiser import Denoiser
from dihal.bridge.diffusion import (
    OBJECTIVES,
    ddim_sample,
    model_x0,
    q_sample,
    training_loss,
    x0_mse,
)
from dihal.bridge.schedule import ALPHA_MIN, COSINE, NoiseSchedule, alpha_sigma, phi, time_grid
from dihal.bridge.standardize import Standardizer

B, T, D = 3, 6, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def prefix(b: int = B, n: int = T, p: int = 2) -> torch.Tensor:
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, :p] = True
    return mask


# ----------------------------------------------------------------------------- schedule


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0))
def test_alpha_sigma_on_unit_circle(t):
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        alpha, sigma = alpha_sigma(torch.tensor([t], dtype=dtype))
        assert abs(float(alpha**2 + sigma**2) - 1.0) < tol
        assert 0.0 <= float(sigma) <= 1.0 and ALPHA_MIN - 1e-7 <= float(alpha) <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_alpha_monotone(t1, t2):
    lo, hi = sorted((t1, t2))
    a_lo, s_lo = alpha_sigma(torch.tensor(lo, dtype=torch.float64))
    a_hi, s_hi = alpha_sigma(torch.tensor(hi, dtype=torch.float64))
    assert a_lo >= a_hi and s_lo <= s_hi


def test_alpha_strictly_decreasing_on_grid():
    alpha, sigma = alpha_sigma(torch.linspace(0, 1, 1001, dtype=torch.float64))
    assert bool((alpha[1:] < alpha[:-1]).all()) and bool((sigma[1:] > sigma[:-1]).all())


def test_schedule_endpoints():
    alpha, sigma = alpha_sigma(torch.tensor([0.0, 1.0]))
    assert alpha[0].item() == 1.0 and sigma[0].item() == 0.0
    assert alpha[1].item() == pytest.approx(ALPHA_MIN, rel=1e-5)
    assert 0.0 < alpha[1].item() < 0.05
    grid = time_grid(50)
    assert grid[0].item() == 1.0 and grid[-1].item() == 0.0 and len(grid) == 51


@pytest.mark.parametrize("bad", [-1e-6, 1.0 + 1e-6, float("nan"), -3.0, 2.0])
def test_schedule_rejects_t_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="t must lie in"):
        alpha_sigma(torch.tensor([0.5, bad]))


def test_schedule_rejects_integer_time_and_bad_steps():
    with pytest.raises(TypeError):
        alpha_sigma(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)


shifts = st.floats(min_value=1.001, max_value=64.0)


@settings(max_examples=100, deadline=None)
@given(shifts, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_shifted_cosine_is_monotone_with_exact_endpoints(shift, t1, t2):
    sched = NoiseSchedule("shifted_cosine", shift)
    lo, hi = sorted((t1, t2))
    (a_lo, a_hi), (s_lo, s_hi) = sched.alpha_sigma(torch.tensor([lo, hi], dtype=torch.float64))
    assert a_lo >= a_hi and s_lo <= s_hi
    alpha, sigma = sched.alpha_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert alpha[0].item() == 1.0 and sigma[0].item() == 0.0  # t = 0 is the clean data, exactly
    expected_end = math.cos(math.atan(shift * math.tan(math.acos(ALPHA_MIN))))
    assert alpha[1].item() == pytest.approx(expected_end, rel=1e-9) and 0 < alpha[1].item() < ALPHA_MIN
    assert abs(float(alpha[1] ** 2 + sigma[1] ** 2) - 1) < 1e-12


@settings(max_examples=100, deadline=None)
@given(shifts, st.floats(0.01, 0.99))
def test_shifted_cosine_divides_the_snr_by_shift_squared_and_matches_noise_levels(shift, t):
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = NoiseSchedule("shifted_cosine", shift).alpha_sigma(tt)
    a0, s0 = alpha_sigma(tt)
    assert float((a / s) ** 2) == pytest.approx(float((a0 / s0) ** 2) / shift**2, rel=1e-9)
    sched = NoiseSchedule("shifted_cosine", shift)
    matched = sched.matching_time(tt)
    assert 0 < matched.item() < t  # more noise at every t, so the cosine's level comes earlier
    assert sched.alpha_sigma(matched)[0].item() == pytest.approx(a0.item(), rel=1e-9)


def test_the_cosine_schedule_is_the_original_function_bit_for_bit():
    t = torch.rand(1000, generator=gen(3))
    assert all(torch.equal(x, y) for x, y in zip(COSINE.alpha_sigma(t), alpha_sigma(t)))
    assert torch.equal(COSINE.matching_time(t), t) and torch.equal(COSINE.angle(t), phi(t))


@pytest.mark.parametrize(
    ("name", "shift", "match"),
    [
        ("cosine", 2.0, "only used by the shifted_cosine"),
        ("shifted_cosine", 0.0, "positive finite"),
        ("shifted_cosine", -1.0, "positive finite"),
        ("shifted_cosine", float("inf"), "positive finite"),
        ("shifted_cosine", True, "positive finite"),
        ("shifted_cosine", 101.0, "at most 100"),
        ("linear", 1.0, "schedule must be one of"),
    ],
)
def test_schedule_parameters_are_checked_not_fixed(name, shift, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule(name, shift)


def test_a_shift_below_one_cannot_reach_the_cosines_highest_noise():
    sched = NoiseSchedule("shifted_cosine", 0.5)
    assert 0 < sched.matching_time(torch.tensor([0.5])).item() < 1
    with pytest.raises(ValueError, match="does not reach"):
        sched.matching_time(torch.tensor([0.2, 0.999]))


# ------------------------------------------------------------------------- standardizer


def test_standardizer_round_trip_and_unit_stats():
    x = torch.randn(40, T, D, generator=gen(1)) * torch.logspace(-2, 3, D) + 7.0
    s = Standardizer.fit(x)
    z = s.transform(x)
    assert z.dtype == torch.float32
    flat = z.reshape(-1, D).double()
    assert torch.allclose(flat.mean(0), torch.zeros(D, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(D, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(s.inverse(z), x, rtol=1e-5, atol=1e-4)


def test_standardizer_mask_and_flat_input():
    x = torch.randn(30, T, D, generator=gen(2))
    x[:, 0] = 1e4  # BOS-like sink that must not enter the statistics
    mask = torch.ones(30, T, dtype=torch.bool)
    mask[:, 0] = False
    s = Standardizer.fit(x, mask=mask)
    ref = Standardizer.fit(x[:, 1:].reshape(-1, D))
    assert torch.equal(s.mean, ref.mean) and torch.equal(s.std, ref.std)
    assert float(s.std.max()) < 2.0
    with pytest.raises(ValueError, match="mask shape"):
        Standardizer.fit(x, mask=mask[:, 1:])


def test_standardizer_constant_dimension_and_errors():
    x = torch.randn(50, D, generator=gen(3))
    x[:, 3] = 2.5
    s = Standardizer.fit(x, eps=1e-6)
    assert s.std[3].item() == pytest.approx(1e-6)
    assert torch.isfinite(s.transform(x)).all()
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Standardizer.fit(bad)
    with pytest.raises(ValueError, match="last dimension"):
        s.transform(torch.zeros(2, D + 1))
    with pytest.raises(ValueError, match="std"):
        Standardizer(mean=torch.zeros(D), std=torch.zeros(D))


def test_standardizer_state_dict_round_trip():
    x = torch.randn(20, T, D, generator=gen(4)) * 3 - 1
    s = Standardizer.fit(x)
    s2 = Standardizer.from_state_dict(s.state_dict())
    assert torch.equal(s.mean, s2.mean) and torch.equal(s.std, s2.std)
    assert torch.equal(s.transform(x), s2.transform(x))
    with pytest.raises(KeyError):
        Standardizer.from_state_dict({"mean": s.mean})


# ----------------------------------------------------------------------------- denoiser


def small_denoiser(seed: int = 0, **kw) -> Denoiser:
    return Denoiser(D, d_model=32, depth=2, heads=4, max_len=T, seed=seed, **kw)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(d_model=30, heads=4), "heads"),
        (dict(time_cond="film"), "time_cond"),
        (dict(pos="rope"), "pos"),
        (dict(depth=0), "depth"),
        (dict(max_len=0), "max_len"),
        (dict(mlp_ratio=0), "mlp_ratio"),
        (dict(d_model=9, heads=3), "d_model"),
        (dict(d_model=0), "d_model"),
    ],
)
def test_denoiser_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Denoiser(D, **kwargs)


def test_denoiser_rejects_too_long_sequence_and_bad_inputs():
    model = small_denoiser()
    x = torch.zeros(1, T + 1, D)
    with pytest.raises(ValueError, match="max_len"):
        model(x, torch.zeros(1), torch.zeros(1, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="clamp_mask"):
        model(torch.zeros(1, T, D), torch.zeros(1), torch.zeros(1, T))
    with pytest.raises(ValueError, match="t must"):
        model(torch.zeros(2, T, D), torch.zeros(1), torch.zeros(2, T, dtype=torch.bool))


@pytest.mark.parametrize("time_cond", ["adaln", "add"])
@pytest.mark.parametrize("pos", ["sinusoidal", "learned"])
def test_denoiser_seeded_init_shapes_and_global_rng_untouched(time_cond, pos):
    before = torch.random.get_rng_state()
    a = small_denoiser(seed=5, time_cond=time_cond, pos=pos)
    b = small_denoiser(seed=5, time_cond=time_cond, pos=pos)
    assert torch.equal(before, torch.random.get_rng_state())
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.count_nonzero(a.out.weight) == 0  # zero-init output: predicts 0 at start
    x = torch.randn(B, T, D, generator=gen())
    assert a(x, torch.rand(B, generator=gen()), prefix()).shape == (B, T, D)
    assert all(torch.isfinite(p).all() for p in a.parameters())


# ------------------------------------------------------------------------------ oracles


class Oracle(nn.Module):
    """Returns the exact answer for `objective` given the true x0 it was built with."""

    def __init__(self, x0: torch.Tensor, objective: str, schedule: NoiseSchedule = COSINE) -> None:
        super().__init__()
        self.x0, self.objective, self.schedule = x0, objective, schedule
        self.seen: list[torch.Tensor] = []
        self.self_inputs: list[torch.Tensor | None] = []

    def forward(self, x_t, t, clamp_mask, x0_self=None):
        self.seen.append(x_t.clone())
        self.self_inputs.append(x0_self)
        if self.objective == "x0":
            return self.x0.clone()
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha[:, None, None], sigma[:, None, None]
        eps = (x_t - alpha * self.x0) / sigma
        return eps if self.objective == "eps" else alpha * eps - sigma * self.x0


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_ddim_with_oracle_recovers_x0(objective, steps):
    x0 = torch.randn(B, T, D, generator=gen(7))
    mask = prefix()
    out = ddim_sample(
        Oracle(x0, objective), clamp_values=x0, clamp_mask=mask, steps=steps, objective=objective, generator=gen(8)
    )
    if objective == "x0":
        assert torch.equal(out, x0)
    else:
        assert torch.allclose(out, x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_ddim_under_a_shifted_schedule_recovers_x0_and_self_conditions_on_the_last_estimate(objective):
    x0 = torch.randn(B, T, D, generator=gen(7))
    mask = prefix()
    sched = NoiseSchedule("shifted_cosine", 4.0)
    oracle = Oracle(x0, objective, sched)
    kw = dict(clamp_values=x0, clamp_mask=mask, steps=7, objective=objective, schedule=sched, generator=gen(8))
    out = ddim_sample(oracle, self_condition=True, **kw)
    assert torch.allclose(out, x0, rtol=1e-5, atol=1e-4)
    assert oracle.self_inputs[0] is None and len(oracle.self_inputs) == 7
    for fed in oracle.self_inputs[1:]:  # each later step sees the previous estimate, clean where clamped
        assert torch.allclose(fed, x0, rtol=1e-5, atol=1e-4) and torch.equal(fed[mask], x0[mask])
    plain = Oracle(x0, objective, sched)
    ddim_sample(plain, **kw)
    assert plain.self_inputs == [None] * 7  # off: the network is never handed an estimate


def test_self_conditioning_input_starts_inert_and_is_refused_where_not_built():
    x = torch.randn(B, T, D, generator=gen(4))
    t, mask = torch.full((B,), 0.5), prefix()
    model = randomised(small_denoiser(self_condition=True))
    with torch.no_grad():
        model.self_cond.weight.zero_()  # as built: zero-initialised, so the estimate changes nothing at first
    assert torch.equal(model(x, t, mask, torch.randn(B, T, D, generator=gen(5))), model(x, t, mask))
    assert not torch.equal(randomised(model, 3)(x, t, mask, x), model(x, t, mask))
    with pytest.raises(ValueError, match="without self_condition"):
        small_denoiser()(x, t, mask, x)
    with pytest.raises(ValueError, match="x0_self must have"):
        model(x, t, mask, x[:, :2])
    with pytest.raises(ValueError, match="self_condition must be"):
        small_denoiser(self_condition=1)


def test_ddim_oracle_recovers_x0_without_any_clamping():
    x0 = torch.randn(B, T, D, generator=gen(9))
    out = ddim_sample(
        Oracle(x0, "eps"),
        clamp_values=torch.zeros_like(x0),
        clamp_mask=torch.zeros(B, T, dtype=torch.bool),
        steps=20,
        objective="eps",
        generator=gen(1),
    )
    assert torch.allclose(out, x0, rtol=1e-5, atol=1e-5)


def randomised(model: Denoiser, seed: int = 11) -> Denoiser:
    """A denoiser whose output is not identically zero (the real init is zero at the output)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen(seed)))
    return model


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_clamped_positions_bit_identical_at_every_step(objective):
    values = torch.randn(B, T, D, generator=gen(12)) * 5
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, :1] = True
    mask[1, :3] = True
    mask[2, [0, 4]] = True  # not only prefixes
    model = randomised(small_denoiser())
    out, traj = ddim_sample(
        model,
        clamp_values=values,
        clamp_mask=mask,
        steps=10,
        objective=objective,
        generator=gen(13),
        return_trajectory=True,
    )
    assert traj.shape == (11, B, T, D)
    assert torch.equal(traj[-1], out)
    for state in traj:
        assert torch.equal(state[mask], values[mask])
    assert not torch.equal(traj[0][~mask], traj[-1][~mask])  # unclamped positions do move
    assert torch.isfinite(out).all()


def test_sampler_feeds_clean_clamped_values_and_is_reproducible():
    x0 = torch.randn(B, T, D, generator=gen(14))
    mask = prefix(p=1)
    oracle = Oracle(x0, "x0")
    ddim_sample(oracle, clamp_values=x0, clamp_mask=mask, steps=5, generator=gen(15))
    assert len(oracle.seen) == 5
    for x_t in oracle.seen:
        assert torch.equal(x_t[mask], x0[mask])
    model = randomised(small_denoiser())
    a = ddim_sample(model, clamp_values=x0, clamp_mask=mask, steps=5, generator=gen(3))
    b = ddim_sample(model, clamp_values=x0, clamp_mask=mask, steps=5, generator=gen(3))
    c = ddim_sample(model, clamp_values=x0, clamp_mask=mask, steps=5, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    before = torch.random.get_rng_state()
    d = ddim_sample(model, clamp_values=x0, clamp_mask=mask, steps=5)
    assert torch.equal(before, torch.random.get_rng_state())
    assert torch.equal(d, ddim_sample(model, clamp_values=x0, clamp_mask=mask, steps=5))


def test_sampler_rejects_bad_inputs():
    x = torch.zeros(B, T, D)
    with pytest.raises(ValueError, match="objective"):
        ddim_sample(Oracle(x, "x0"), clamp_values=x, clamp_mask=prefix(), objective="score")
    with pytest.raises(ValueError, match="clamp_mask"):
        ddim_sample(Oracle(x, "x0"), clamp_values=x, clamp_mask=prefix().float())
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        ddim_sample(Oracle(x, "x0"), clamp_values=bad, clamp_mask=prefix())


# ------------------------------------------------------------------------------- losses


def test_q_sample_matches_definition():
    x0, noise = torch.randn(B, T, D, generator=gen(1)), torch.randn(B, T, D, generator=gen(2))
    t = torch.tensor([0.0, 0.5, 1.0])
    x_t = q_sample(x0, t, noise)
    assert torch.equal(x_t[0], x0[0])
    a = math.cos(0.5 * math.acos(ALPHA_MIN))
    assert torch.allclose(x_t[1], a * x0[1] + math.sqrt(1 - a * a) * noise[1], atol=1e-6)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_oracle_has_zero_loss_and_x0_mse(objective):
    x0, noise = torch.randn(B, T, D, generator=gen(1)), torch.randn(B, T, D, generator=gen(2))
    t = torch.tensor([0.05, 0.5, 1.0])
    mask = prefix()

    class Exact(nn.Module):
        def forward(self, x_t, t_, m):
            assert torch.equal(x_t[m], x0[m])  # in-painting: clean values at clamped positions
            alpha, sigma = alpha_sigma(t_)
            alpha, sigma = alpha[:, None, None], sigma[:, None, None]
            targets = {"x0": x0, "eps": noise, "v": alpha * noise - sigma * x0}
            return torch.where(m[..., None], 1e3, targets[objective])  # junk where clamped

    assert training_loss(Exact(), x0, mask, t, noise, objective).item() < 1e-10
    assert x0_mse(Exact(), x0, mask, t, noise, objective).item() < 1e-8
    x_t = torch.where(mask[..., None], x0, q_sample(x0, t, noise))
    assert torch.allclose(model_x0(Exact(), x_t, t, mask, objective)[~mask], x0[~mask], atol=1e-4)


def test_loss_averages_over_unclamped_positions_only():
    x0 = torch.randn(B, T, D, generator=gen(1))
    noise = torch.randn(B, T, D, generator=gen(2))
    model = small_denoiser()  # predicts 0 everywhere at init
    mask = prefix(p=2)
    loss = training_loss(model, x0, mask, torch.full((B,), 0.3), noise, "x0")
    assert loss.item() == pytest.approx(float((x0[:, 2:] ** 2).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="clamped"):
        training_loss(model, x0, torch.ones(B, T, dtype=torch.bool), torch.rand(B, generator=gen()), noise)
    with pytest.raises(ValueError, match="objective"):
        training_loss(model, x0, mask, torch.rand(B, generator=gen()), noise, "score")
