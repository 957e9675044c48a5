"""The bridge's training loop: fixed-budget, seeded, resumable bit for bit.

A layer sweep compares bridges trained under one fixed protocol, so the loop's whole
trajectory must be a function of (initial weights, data, config) only:
- every random draw (batch indices, t from cfg's time sampling, noise, and with
  self-conditioning the per-step coin) comes from one torch.Generator owned by the loop and
  seeded with cfg.seed, never from the global RNG;
- checkpoints hold the model, the optimizer, that generator's state, the step, the curve
  and the partial logging window, so a run killed at any point (kill -9 included) and
  restarted from its last checkpoint ends with the same weights and curve, bit for bit,
  as one that was never interrupted (same machine, same thread count);
- checkpoints are written to a temporary file and os.replace'd into place, so a kill
  during the write leaves the previous checkpoint intact;
- a checkpoint from another config or other data is refused instead of silently mixing
  two runs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dihal.bridge.diffusion import OBJECTIVES, prefix_mask, training_loss
from dihal.bridge.schedule import NoiseSchedule
from dihal.bridge.timesteps import TimeSampling
from dihal.utils.atomic import atomic_open
from dihal.utils.progress import bar as progress_bar

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "lr_at", "prefix_mask", "train_denoiser"]

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss (or gradient norm); carries where and what."""

    def __init__(self, step: int, value: float, what: str = "loss") -> None:
        self.step, self.value, self.what = step, value, what
        super().__init__(f"non-finite {what} {value!r} at step {step}")


@dataclass(frozen=True)
class TrainConfig:
    """The fixed training protocol.

    Its checks repeat BridgeSpec's on purpose, with the same rules: a TrainConfig is also
    built outside a validated spec (bench/bridge.py, tests, notebooks using the library),
    and a bad value there must fail here, by name, not deep inside the loop. The train
    stage builds it from already-validated fields, where the checks cannot fire.
    """

    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    objective: str = "x0"
    checkpoint_every: int = 100
    seed: int = 0
    prefix: int = 1
    # The recipe (docs/method.md, "Replace: the bridge"); the defaults are the protocol's original one.
    self_condition: bool = False
    schedule: str = "cosine"
    schedule_shift: float = 1.0
    time_sampling: str = "uniform"
    time_loc: float = 0.0
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("warmup", "prefix", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.warmup >= self.steps:  # the same rule as BridgeSpec: lr_at(steps) needs a cosine phase
            raise ValueError(f"warmup ({self.warmup}) must be smaller than steps ({self.steps})")
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not isinstance(self.self_condition, bool):
            raise ValueError(f"self_condition must be true or false, got {self.self_condition!r}")
        self.noise_schedule  # noqa: B018 -- built once here so a bad schedule or time sampling fails by name
        self.time_sampler  # noqa: B018

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.schedule, self.schedule_shift)

    @property
    def time_sampler(self) -> TimeSampling:
        return TimeSampling(self.time_sampling, self.time_loc, self.time_scale)


@dataclass
class TrainResult:
    curve: list[dict] = field(default_factory=list)
    final_step: int = 0
    resumed_from: int | None = None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up over the first
    cfg.warmup steps (reaching cfg.lr at step warmup - 1, never 0 at step 0), then a cosine
    decay that reaches 0 at step == cfg.steps, one past the last step taken."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= cfg.steps:
        raise ValueError(f"step must be an int in [0, {cfg.steps}], got {step!r}")
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / (cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def data_fingerprint(x: torch.Tensor) -> str:
    """Hash of shape, dtype and bytes: resuming on different data must fail loudly."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(x.shape)}|{x.dtype}".encode())
    h.update(memoryview(x.detach().cpu().contiguous().view(torch.uint8).numpy()))
    return h.hexdigest()


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write then atomically rename, fsync'd, so a kill never leaves a torn checkpoint."""
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(state, f)


def _load_checkpoint(path: Path, expect: dict) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in expect.items():
        if state.get(key) != value:
            raise ValueError(
                f"checkpoint {path} does not belong to this run: its {key} is "
                f"{state.get(key)!r}, this run's is {value!r}. Delete it or use another path."
            )
    return state


def train_denoiser(
    denoiser: nn.Module,
    train_x0: torch.Tensor,
    cfg: TrainConfig,
    *,
    checkpoint_path: Path | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> TrainResult:
    """Train `denoiser` in place on standardised (N, T, d) float32 targets.

    On a CUDA device the forward pass and loss run under bf16 autocast; parameters, gradients and optimizer
    state stay float32. On CPU everything is float32.

    Logged loss is the mean over the steps since the previous log entry (single-batch
    losses at random t are too noisy to read); lr and grad_norm are those of the logged
    step (grad_norm before clipping). If checkpoint_path exists, training resumes from it;
    the denoiser passed in must then have the same architecture, and its own weights are
    replaced by the checkpoint's.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if train_x0.ndim != 3 or train_x0.dtype != torch.float32:
        raise ValueError(f"train_x0 must be float32 (N, T, d), got {train_x0.dtype} {tuple(train_x0.shape)}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be a positive int, got {log_every!r}")
    n, length, _ = train_x0.shape
    if n < 1:
        raise ValueError("train_x0 is empty")
    if cfg.self_condition != getattr(denoiser, "self_condition", False):
        raise ValueError(
            f"cfg.self_condition is {cfg.self_condition} but the denoiser was built with "
            f"self_condition={getattr(denoiser, 'self_condition', False)}: build it with the recipe it trains under"
        )
    device = next(denoiser.parameters()).device
    mask = prefix_mask(cfg.batch_size, length, cfg.prefix, device)
    schedule, times = cfg.noise_schedule, cfg.time_sampler

    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr_at(0, cfg), weight_decay=cfg.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    step, curve, window_sum, window_count = 0, [], 0.0, 0
    resumed_from = None
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    identity = {}
    if checkpoint_path is not None:
        identity = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(cfg),
            "log_every": log_every,
            "data": data_fingerprint(train_x0),
        }
        if checkpoint_path.exists():
            state = _load_checkpoint(checkpoint_path, identity)
            denoiser.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            step, curve = state["step"], list(state["curve"])
            window_sum, window_count = state["window_sum"], state["window_count"]
            resumed_from = step

    denoiser.train()
    bar = progress_bar(total=cfg.steps, initial=step, enabled=progress, desc="bridge", unit="step")
    try:
        while step < cfg.steps:
            # Draw order is part of the protocol: indices, t, noise (then, with self-conditioning only, the
            # coin), all from `gen`, on CPU so the stream is the same whatever device the model is on.
            idx = torch.randint(n, (cfg.batch_size,), generator=gen)
            t = times.draw(cfg.batch_size, gen)
            noise = torch.randn((cfg.batch_size, *train_x0.shape[1:]), generator=gen)
            # Analog Bits: half the steps train on the network's own first estimate, half on none.
            self_cond = cfg.self_condition and bool(torch.rand((), generator=gen) < 0.5)
            loss_kw = {"schedule": schedule, "self_condition": self_cond}
            x0 = train_x0[idx].to(device)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr

            if device.type == "cuda":  # bf16 autocast over fp32 master weights; bf16 needs no loss scaling
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = training_loss(denoiser, x0, mask, t.to(device), noise.to(device), cfg.objective, **loss_kw)
                loss = loss.float()
            else:  # CPU: full fp32, bit-identical to the protocol's reference runs
                loss = training_loss(denoiser, x0, mask, t.to(device), noise.to(device), cfg.objective, **loss_kw)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(step + 1, loss_value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            if not math.isfinite(grad_norm):
                raise NonFiniteLossError(step + 1, grad_norm, what="gradient norm")
            optimizer.step()
            step += 1
            window_sum += loss_value
            window_count += 1
            bar.update(1)

            if step % log_every == 0 or step == cfg.steps:
                mean_loss = window_sum / window_count
                curve.append({"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm})
                window_sum, window_count = 0.0, 0
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            if checkpoint_path is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                _save_checkpoint(
                    checkpoint_path,
                    {
                        **identity,
                        "model": denoiser.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "generator": gen.get_state(),
                        "step": step,
                        "curve": curve,
                        "window_sum": window_sum,
                        "window_count": window_count,
                    },
                )
    finally:
        bar.close()
    denoiser.eval()
    return TrainResult(curve=curve, final_step=step, resumed_from=resumed_from)
