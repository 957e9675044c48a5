"""Training loop of the diffusion bridge: schedule, learning, determinism and resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import dihal.bridge.train as train_mod
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.diffusion import ddim_sample, x0_mse
from dihal.bridge.train import NonFiniteLossError, TrainConfig, lr_at, prefix_mask, train_denoiser

T, D = 6, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def low_rank_data(n: int = 256, rank: int = 2, seed: int = 0) -> torch.Tensor:
    """Sequences on a rank-`rank` linear manifold of R^(T*D), standardised: structure the
    denoiser can learn in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, T * D, generator=g)
    x = (torch.randn(n, rank, generator=g) @ basis).reshape(n, T, D)
    return ((x - x.mean((0, 1))) / x.std((0, 1))).float()


def model(seed: int = 0, self_condition: bool = False) -> Denoiser:
    return Denoiser(D, d_model=32, depth=2, heads=4, max_len=T, seed=seed, self_condition=self_condition)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=20, batch_size=16, lr=3e-3, warmup=4, checkpoint_every=5, seed=3)
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------------------- config


def test_lr_schedule_warmup_then_cosine_to_zero():
    c = TrainConfig(steps=100, warmup=10, lr=1e-3)
    lrs = [lr_at(s, c) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3) and lrs[10] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == 0.0 and lrs[99] > 0.0
    assert lr_at(0, TrainConfig(steps=5, warmup=0, lr=0.1)) == pytest.approx(0.1)
    for bad in (-1, 101):
        with pytest.raises(ValueError, match="step"):
            lr_at(bad, c)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(steps=0), "steps"),
        (dict(warmup=700), "warmup"),
        (dict(lr=0.0), "lr"),
        (dict(objective="score"), "objective"),
        (dict(prefix=-1), "prefix"),
        (dict(batch_size=0), "batch_size"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(self_condition="yes"), "self_condition"),
        (dict(schedule="linear"), "schedule"),
        (dict(schedule="shifted_cosine", schedule_shift=0.0), "shift"),
        (dict(schedule_shift=2.0), "shift is only used by the shifted_cosine"),
        (dict(time_sampling="beta"), "time_sampling"),
        (dict(time_loc=1.0), "only used by logit_normal"),
        (dict(time_sampling="logit_normal", time_scale=0.0), "scale must be > 0"),
    ],
)
def test_train_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_train_config_and_spec_agree_on_warmup():
    """warmup == steps is refused by both (it would leave lr_at(steps) no cosine phase to divide by)."""
    from pydantic import ValidationError

    from dihal.spec.schema import BridgeSpec

    for make in (TrainConfig, BridgeSpec):
        make(steps=10, warmup=9)
        with pytest.raises((ValueError, ValidationError), match="warmup"):
            make(steps=10, warmup=10)


def test_prefix_must_leave_something_to_generate():
    assert prefix_mask(2, 4, 1).tolist() == [[True, False, False, False]] * 2
    with pytest.raises(ValueError, match="prefix"):
        train_denoiser(model(), low_rank_data(8), cfg(prefix=T), progress=False)


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("objective", ["x0", "eps", "v"])
def test_training_loss_falls_on_low_rank_sequences(objective):
    data = low_rank_data()
    net = model()
    c = cfg(steps=60, batch_size=32, lr=1e-2, warmup=5, objective=objective)
    mask = prefix_mask(64, T, c.prefix)
    g = torch.Generator().manual_seed(99)
    x0, t, noise = data[:64], torch.rand(64, generator=g), torch.randn(64, T, D, generator=g)
    before = x0_mse(net, x0, mask, t, noise, objective).item()
    result = train_denoiser(net, data, c, progress=False, log_every=5)
    after = x0_mse(net, x0, mask, t, noise, objective).item()
    losses = [row["loss"] for row in result.curve]
    assert len(result.curve) == 12 and result.final_step == 60 and result.resumed_from is None
    assert set(result.curve[0]) == {"step", "loss", "lr", "grad_norm"}
    # Thresholds leave margin for the slowest objective (v falls least in 60 steps).
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2
    assert after < 0.75 * before
    out = ddim_sample(
        net,
        clamp_values=x0[:4],
        clamp_mask=mask[:4],
        steps=10,
        objective=objective,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(out).all()


def test_nan_in_data_raises_non_finite_loss_error():
    data = low_rank_data(32)
    data[:, 3, 2] = float("nan")
    with pytest.raises(NonFiniteLossError, match="step 1") as info:
        train_denoiser(model(), data, cfg(), progress=False)
    assert info.value.step == 1 and info.value.value != info.value.value  # NaN


def test_training_never_touches_global_rng_and_is_deterministic():
    data = low_rank_data(64)
    before = torch.random.get_rng_state()
    a, b = model(), model()
    ra = train_denoiser(a, data, cfg(steps=8), progress=False, log_every=2)
    rb = train_denoiser(b, data, cfg(steps=8), progress=False, log_every=2)
    assert torch.equal(before, torch.random.get_rng_state())
    assert ra.curve == rb.curve
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_runs_under_torch_deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        net = model()
        train_denoiser(net, low_rank_data(32), cfg(steps=3, warmup=1), progress=False)
        x0 = low_rank_data(2)
        ddim_sample(
            net, clamp_values=x0, clamp_mask=prefix_mask(2, T, 1), steps=3, generator=torch.Generator().manual_seed(0)
        )
    finally:
        torch.use_deterministic_algorithms(previous)


# ------------------------------------------------------------------------------- resume


def assert_same_run(a: Denoiser, ra, b: Denoiser, rb) -> None:
    assert ra.curve == rb.curve
    assert ra.final_step == rb.final_step
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


class Crash(Exception):
    pass


# A recipe with every option away from its default: its extra draws (the self-conditioning coin, the
# logit-normal times) are part of the generator state a checkpoint must carry.
RECIPE = dict(
    self_condition=True, schedule="shifted_cosine", schedule_shift=3.0, time_sampling="logit_normal", time_loc=0.5
)


@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["default", "recipe"])
def test_crash_after_checkpoint_then_resume_is_bit_identical(tmp_path, monkeypatch, recipe):
    data = low_rank_data(64)
    c = cfg(steps=20, checkpoint_every=5, **recipe)
    sc = bool(recipe)
    # log_every=3 does not divide checkpoint_every: the partial logging window must survive.
    ref = model(self_condition=sc)
    ref_result = train_denoiser(ref, data, c, progress=False, log_every=3)

    ckpt = tmp_path / "bridge.pt"
    real_save = train_mod._save_checkpoint

    def save_then_crash(path, state):
        real_save(path, state)
        if state["step"] == 10:
            raise Crash

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train_denoiser(model(self_condition=sc), data, c, checkpoint_path=ckpt, progress=False, log_every=3)
    monkeypatch.setattr(train_mod, "_save_checkpoint", real_save)

    resumed = model(seed=123, self_condition=sc)  # different init: the checkpoint must replace it entirely
    result = train_denoiser(resumed, data, c, checkpoint_path=ckpt, progress=False, log_every=3)
    assert result.resumed_from == 10
    assert_same_run(ref, ref_result, resumed, result)
    # Re-running a finished run is a no-op that reports the same outcome.
    again = model(seed=7, self_condition=sc)
    result2 = train_denoiser(again, data, c, checkpoint_path=ckpt, progress=False, log_every=3)
    assert result2.resumed_from == 20
    assert_same_run(ref, ref_result, again, result2)
    assert not list(tmp_path.glob("*.tmp*"))


def test_checkpoint_from_another_run_is_refused(tmp_path):
    data = low_rank_data(32)
    ckpt = tmp_path / "bridge.pt"
    train_denoiser(model(), data, cfg(steps=5), checkpoint_path=ckpt, progress=False)
    with pytest.raises(ValueError, match="config"):
        train_denoiser(model(), data, cfg(steps=5, lr=1e-2), checkpoint_path=ckpt, progress=False)
    with pytest.raises(ValueError, match="data"):
        train_denoiser(model(), data + 1, cfg(steps=5), checkpoint_path=ckpt, progress=False)
    with pytest.raises(ValueError, match="log_every"):
        train_denoiser(model(), data, cfg(steps=5), checkpoint_path=ckpt, progress=False, log_every=3)


CHILD = """
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, {root!r})
import dihal.bridge.train as train_mod
from tests.test_bridge_train import cfg, low_rank_data, model

real_save = train_mod._save_checkpoint
def save_then_hang(path, state):
    real_save(path, state)
    if state["step"] == {kill_at}:
        Path({marker!r}).write_text("saved")
        time.sleep(600)  # wait here for SIGKILL
train_mod._save_checkpoint = save_then_hang
train_mod.train_denoiser(model(), low_rank_data(64), cfg(steps={steps}), progress=False,
                         checkpoint_path=Path({ckpt!r}), log_every=3)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    steps, kill_at = 15, 10
    ckpt, marker = tmp_path / "bridge.pt", tmp_path / "saved"
    script = CHILD.format(root=root, kill_at=kill_at, marker=str(marker), steps=steps, ckpt=str(ckpt))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert child.poll() is None, f"child exited early with {child.returncode}"
            assert time.monotonic() < deadline, "child never wrote its checkpoint"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    c = cfg(steps=steps)
    ref = model()
    ref_result = train_denoiser(ref, low_rank_data(64), c, progress=False, log_every=3)
    resumed = model(seed=1)
    result = train_denoiser(resumed, low_rank_data(64), c, checkpoint_path=ckpt, progress=False, log_every=3)
    assert result.resumed_from == kill_at
    assert_same_run(ref, ref_result, resumed, result)


def test_config_is_frozen_and_recorded():
    c = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 5  # type: ignore[misc]
    assert dataclasses.asdict(c)["objective"] == "x0" and c.prefix == 1 and c.steps == 600


def test_progress_bar_runs_and_reports_loss(capsys):
    result = train_denoiser(model(), low_rank_data(32), cfg(steps=4, warmup=1), progress=True, log_every=2)
    err = capsys.readouterr().err
    assert "loss=" in err and "4/4" in err
    assert [row["step"] for row in result.curve] == [2, 4]


# ------------------------------------------------------------------------------ recipe


def test_default_recipe_reproduces_the_numbers_of_the_code_before_recipes():
    """Curve, weights, validation x0-MSE and samples equal, bit for bit, what main at 6c01a4a computed
    (tests/bridge_reference.py, one thread, CPU float32)."""
    from tests.bridge_reference import reference_run

    golden = json.loads((Path(__file__).parent / "golden" / "bridge_default_recipe.json").read_text())
    for objective, expected in golden.items():
        assert reference_run(objective) == expected, objective


def test_self_conditioning_adds_one_projection_then_trains_and_samples():
    plain, sc = model(), model(self_condition=True)
    assert set(sc.state_dict()) - set(plain.state_dict()) == {"self_cond.weight"}
    assert sum(p.numel() for p in sc.parameters()) - sum(p.numel() for p in plain.parameters()) == D * 32
    for name, value in plain.state_dict().items():  # registered last: every other initial value is the same
        assert torch.equal(value, sc.state_dict()[name]), name
    data = low_rank_data()
    c = cfg(steps=60, batch_size=32, lr=1e-2, warmup=5, **RECIPE)
    result = train_denoiser(sc, data, c, progress=False, log_every=5)
    losses = [row["loss"] for row in result.curve]
    assert all(math.isfinite(v) for v in losses) and sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2
    assert sc.self_cond.weight.abs().sum() > 0, "the self-conditioning projection learned something"
    mask = prefix_mask(64, T, 1)
    g = torch.Generator().manual_seed(99)
    x0, t, noise = data[:64], torch.rand(64, generator=g), torch.randn(64, T, D, generator=g)
    schedule = c.noise_schedule
    two_pass = x0_mse(sc, x0, mask, t, noise, "x0", schedule=schedule, self_condition=True).item()
    assert math.isfinite(two_pass) and two_pass < 0.8
    kw = dict(clamp_values=x0[:4], clamp_mask=mask[:4], steps=10, schedule=schedule, generator=torch.Generator())
    out = ddim_sample(sc, self_condition=True, **kw)
    assert torch.isfinite(out).all() and not torch.equal(out, ddim_sample(sc, self_condition=False, **kw))


def test_a_denoiser_built_for_another_recipe_is_refused():
    with pytest.raises(ValueError, match="self_condition"):
        train_denoiser(model(), low_rank_data(8), cfg(self_condition=True), progress=False)
    with pytest.raises(ValueError, match="self_condition"):
        train_denoiser(model(self_condition=True), low_rank_data(8), cfg(), progress=False)


def test_time_sampling_draws():
    from dihal.bridge.timesteps import TimeSampling

    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(TimeSampling().draw(512, g1), torch.rand(512, generator=g2)), "uniform is torch.rand"
    centred = TimeSampling("logit_normal").draw(20000, torch.Generator().manual_seed(2))
    high = TimeSampling("logit_normal", loc=1.0, scale=0.5).draw(20000, torch.Generator().manual_seed(2))
    for t in (centred, high):
        assert bool(((t >= 0) & (t <= 1)).all())
    assert abs(float(centred.median()) - 0.5) < 0.02  # sigmoid(0)
    assert abs(float(high.median()) - 1 / (1 + math.exp(-1.0))) < 0.02  # sigmoid(loc): toward high noise
    assert float(high.std()) < float(centred.std())
