"""train: fit the denoiser to an interface's standardised states under the fixed protocol.

The hidden-state bridge trains on the h_ℓ its targets stage stored. A C3 baseline (`params.interface`) samples
the very same training and validation blocks (same function, same spec seed), trains its recovery part if it
has one (readout, autoencoder), and trains the same denoiser, with the same protocol, on its interface's states.
What it spent is written next to the diffusion budget: `diffusion_steps`, the denoiser's parameter count, and
the recovery part's steps, parameters and seconds.

Checkpoints live outside the DVC output (DVC clears outputs before a stage runs),
keyed by the stage hash, so a killed run resumes where it stopped and ends with
the same bytes as an uninterrupted one; they are removed once the bridge is saved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

import dihal.stages.dvc_files as dvc_files
from dihal.spec.schema import RECIPE_KEYS
from dihal.stages.common import (
    RESULT_METRICS,
    StageConfig,
    Timer,
    check_stage_finite,
    open_backbone,
    read_json,
    sample_split_blocks,
    save_array,
    write_json,
    write_results,
)
from dihal.utils import progress

CHECKPOINTS = Path("artifacts") / "checkpoints"


def denoiser_config(p: dict, d: int) -> dict:
    return {
        "d_in": d,
        "d_model": p["d_model"],
        "depth": p["depth"],
        "heads": p["heads"],
        "max_len": p["seq_len"],
        "time_cond": p["time_cond"],
        "pos": p["pos"],
        "self_condition": p["self_condition"],
        "seed": p["seed"],
    }


def fit_standardizer(train_h: torch.Tensor, ids: np.ndarray, specials, prefix: int, outliers: dict):
    """The Standardizer, fit on the states the bridge generates and nothing else.

    Clamped prefix positions and special tokens are excluded, and massive-activation
    states are handled by the same rule as the geometry's: one state with a norm of
    ~27k among medians of ~100 would otherwise set a channel's std to 100x its typical
    value and squash that channel for every other state.
    """
    from dihal.bridge.standardize import Standardizer
    from dihal.data.blocks import content_mask
    from dihal.geometry.outliers import apply_rule

    mask = content_mask(ids, set(int(i) for i in specials), skip=prefix)
    rows = train_h.numpy()[mask]
    kept, _, report = apply_rule(rows, outliers["rule"], outliers["threshold"])
    std = Standardizer.fit(torch.from_numpy(kept))
    return std, {**report.to_dict(), "positions_excluded": int((~mask).sum())}


def hidden_states(cfg: StageConfig) -> tuple[torch.Tensor, np.ndarray, list, dict, dict]:
    """(states, ids, special ids, saved interface, recovery budget) of the bridge: h_ℓ from its targets stage."""
    from dihal.interfaces.base import NO_RECOVERY

    src = cfg.inputs["targets"]
    meta = read_json(src / "meta.json")
    states = torch.from_numpy(np.load(src / "train_h.npy"))
    saved = {"name": "hidden", "state": {"layer": meta["layer"]}}
    return states, np.load(src / "train_ids.npy"), meta.get("special_ids", []), saved, dict(NO_RECOVERY)


def interface_states(cfg: StageConfig) -> tuple[torch.Tensor, np.ndarray, list, dict, dict]:
    """The same for a baseline: its blocks (saved for evaluate), its recovery part fitted, its clean states."""
    from dihal.interfaces import interface_class

    p, settings = cfg.params, cfg.params["interface"]
    bb, ad = open_backbone(cfg.backbone_spec())
    blocks = {
        split: sample_split_blocks(
            cfg, bb.tokenizer, split, seq_len=p["seq_len"], n_blocks=p["blocks"][n], seed=p["block_seed"]
        )
        for split, n in (("train", "n_train"), ("validation", "n_val"))
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("validation", "val")):
        save_array(cfg.out / f"{name}_ids.npy", np.asarray(blocks[split][0].ids))
    ids = np.asarray(blocks["train"][0].ids)
    specials = sorted(blocks["train"][2])
    iface = interface_class(settings["name"]).create(ad, settings)
    recovery = iface.fit(torch.from_numpy(ids).long(), specials=specials, seed=p["seed"], progress=progress.enabled())
    states = iface.clean_batched(torch.from_numpy(ids).long())
    return states, ids, specials, {"name": iface.name, "state": iface.state()}, recovery


def run(cfg: StageConfig) -> None:
    from dihal.bridge.denoiser import Denoiser
    from dihal.bridge.train import TrainConfig, train_denoiser

    p = cfg.params
    prefix = p["prefix"]
    baseline = "interface" in p
    train_h, ids, specials, saved, recovery = interface_states(cfg) if baseline else hidden_states(cfg)
    layer = saved["state"]["layer"]
    std, fit_report = fit_standardizer(train_h, ids, specials, prefix, p["outliers"])
    x0 = std.transform(train_h)
    dcfg = denoiser_config(p, train_h.shape[-1])
    den = Denoiser(**dcfg).to(p.get("device", "cpu"))
    tcfg = TrainConfig(
        steps=p["steps"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        warmup=p["warmup"],
        weight_decay=p["weight_decay"],
        grad_clip=p["grad_clip"],
        objective=p["objective"],
        seed=p["seed"],
        prefix=prefix,
        checkpoint_every=cfg.runtime.get("checkpoint_every", 100),
        **{key: p[key] for key in RECIPE_KEYS},
    )
    ckpt = CHECKPOINTS / cfg.hash / "ckpt.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with Timer() as timer:
        result = train_denoiser(den, x0, tcfg, checkpoint_path=ckpt, progress=progress.enabled())
    check_stage_finite(cfg, {"loss": [point["loss"] for point in result.curve]}, RESULT_METRICS["train"])
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "denoiser": {k: v.cpu() for k, v in den.state_dict().items()},
            "denoiser_config": dcfg,
            "standardizer": std.state_dict(),
            "layer": layer,
            "objective": p["objective"],
            "schedule": tcfg.noise_schedule.to_dict(),
            "prefix": prefix,
            "seq_len": p["seq_len"],
            "interface": saved,
        },
        out / "bridge.pt",
    )
    trained_steps = p["steps"] - (result.resumed_from or 0)
    write_json(out / "curve.json", result.curve)
    train_meta = {
        "layer": layer,
        "seed": p["seed"],
        "steps": p["steps"],
        "seconds": timer.seconds,
        "resumed_from": result.resumed_from,
        "tokens_per_s": trained_steps * p["batch_size"] * p["seq_len"] / max(timer.seconds, 1e-9),
        "n_params": sum(x.numel() for x in den.parameters()),
        "standardizer_fit": fit_report,
        "interface": saved["name"],
        "diffusion_steps": p["steps"],
        **recovery,
        "budget_matched": not (p.get("interface") or {}).get("unmatched", False),
    }
    write_json(out / "meta.json", train_meta)
    write_results(cfg, *dvc_files.train_results(result.curve, train_meta))
    shutil.rmtree(ckpt.parent, ignore_errors=True)
