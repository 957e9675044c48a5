"""train: fit the denoiser to standardised h_ℓ under the fixed protocol.

Checkpoints live outside the DVC output (DVC clears outputs before a stage runs),
keyed by the stage hash, so a killed run resumes where it stopped and ends with
the same bytes as an uninterrupted one; they are removed once the bridge is saved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from dihal import progress
from dihal.stages.common import StageConfig, Timer, read_json, write_json

CHECKPOINTS = Path("artifacts") / "checkpoints"


def denoiser_config(p: dict, d: int) -> dict:
    return {"d_in": d, "d_model": p["d_model"], "depth": p["depth"], "heads": p["heads"],
            "max_len": p["seq_len"], "time_cond": p["time_cond"], "pos": p["pos"], "seed": p["seed"]}  # fmt: skip


def run(cfg: StageConfig) -> None:
    from dihal.bridge.denoiser import Denoiser
    from dihal.bridge.standardize import Standardizer
    from dihal.bridge.train import TrainConfig, train_denoiser

    p = cfg.params
    src = cfg.inputs["targets"]
    meta = read_json(src / "meta.json")
    train_h = torch.from_numpy(np.load(src / "train_h.npy"))
    prefix = p["prefix"]
    std = Standardizer.fit(train_h[:, prefix:].reshape(-1, train_h.shape[-1]))
    x0 = std.transform(train_h)
    dcfg = denoiser_config(p, train_h.shape[-1])
    den = Denoiser(**dcfg).to(p.get("device", "cpu"))
    tcfg = TrainConfig(
        steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"], warmup=p["warmup"],
        weight_decay=p["weight_decay"], grad_clip=p["grad_clip"], objective=p["objective"],
        seed=p["seed"], prefix=prefix, checkpoint_every=cfg.runtime.get("checkpoint_every", 100),
    )  # fmt: skip
    ckpt = CHECKPOINTS / cfg.hash / "ckpt.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with Timer() as timer:
        result = train_denoiser(den, x0, tcfg, checkpoint_path=ckpt, progress=progress.enabled())
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    torch.save({
        "denoiser": {k: v.cpu() for k, v in den.state_dict().items()}, "denoiser_config": dcfg, "standardizer": std.state_dict(),
        "layer": meta["layer"], "objective": p["objective"], "prefix": prefix, "seq_len": p["seq_len"],
    }, out / "bridge.pt")  # fmt: skip
    trained_steps = p["steps"] - (result.resumed_from or 0)
    write_json(out / "curve.json", result.curve)
    write_json(out / "meta.json", {
        "layer": meta["layer"], "seed": p["seed"], "steps": p["steps"], "seconds": timer.seconds,
        "resumed_from": result.resumed_from,
        "tokens_per_s": trained_steps * p["batch_size"] * p["seq_len"] / max(timer.seconds, 1e-9),
        "n_params": sum(x.numel() for x in den.parameters()),
    })  # fmt: skip
    shutil.rmtree(ckpt.parent, ignore_errors=True)
