"""evaluate: insertion quality, recovery through the upper stack, and generation.

Every random draw comes from generators seeded by the bridge seed, so the same
spec gives the same numbers. The judge of generated text is the full, unmodified
backbone; its perplexity counts only the generated positions, not the prompt.

Noise levels are the cosine schedule's: `eval.t_grid` and `eval.recovery_t` name the noise of the
cosine at those times, and a bridge trained under another schedule is asked at its own time for the
same noise (`NoiseSchedule.matching_time`), so losses under different recipes compare like with like.
A self-conditioned bridge's single-step estimates are its two-pass ones (dihal.bridge.diffusion).

MAUVE compares the samples with the real continuations of the same prompts (the
validation blocks the prompts are cut from), both featurised by the judge's pass
(`dihal.analysis.mauve_metric`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

import dihal.stages.dvc_files as dvc_files
from dihal.analysis.judge import judge  # the judge, shared with the reference stage
from dihal.stages.common import (
    RESULT_METRICS,
    StageConfig,
    Timer,
    check_stage_finite,
    open_backbone,
    write_json,
    write_results,
)
from dihal.utils import progress


def _gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def val_losses(hybrid, x0: torch.Tensor, prefix: int, t_grid: list[float], n_batches: int, seed: int) -> list[float]:
    """x0-MSE per validation batch, averaged over the fixed grid of (cosine) noise levels, with fixed noise."""
    from dihal.bridge.diffusion import prefix_mask, x0_mse

    dev = hybrid.adapter.device
    mask = prefix_mask(*x0.shape[:2], prefix)
    g = _gen(seed, 1)  # noise is drawn on the CPU so every device sees the same draws
    out = []
    for chunk, m in zip(torch.tensor_split(x0, n_batches), torch.tensor_split(mask, n_batches)):
        losses = []
        for t in t_grid:
            noise = torch.randn(chunk.shape, generator=g)
            tt = hybrid.schedule.matching_time(torch.full((chunk.shape[0],), float(t)))
            args = (chunk.to(dev), m.to(dev), tt.to(dev), noise.to(dev), hybrid.objective)
            recipe = {"schedule": hybrid.schedule, "self_condition": hybrid.self_condition}
            losses.append(float(x0_mse(hybrid.denoiser, *args, **recipe)))
        out.append(float(np.mean(losses)))
    return out


def recovery(
    lm, x0: torch.Tensor, true_h: torch.Tensor, ids: torch.Tensor, prefix: int, t: float, seed: int, batch: int = 16
) -> dict:
    """Noise at t, denoise once, decode; CE against the tokens the generated states score (the next tokens for
    hidden states, the tokens themselves for embeddings and latents: `Interface.shift`).

    Cross-entropy is left out (None) where the interface's decoder is no distribution (rounding), and counts
    only the targets a training-vocabulary decoder can produce; `recovery_coverage` is their share."""
    from dihal.bridge.diffusion import model_x0, noised_input, prefix_mask
    from dihal.interfaces.base import covered_ce

    iface = lm.interface
    g = _gen(seed, 2)
    nll, covered, correct, agree, count = 0.0, 0, 0, 0, 0
    for i in range(0, len(x0), batch):
        xb, hb, ib = x0[i : i + batch], true_h[i : i + batch], ids[i : i + batch]
        mask = prefix_mask(*xb.shape[:2], prefix)
        tt = lm.schedule.matching_time(torch.full((xb.shape[0],), float(t)))
        xt = noised_input(xb, mask, tt, torch.randn(xb.shape, generator=g), lm.schedule)
        dev = lm.adapter.device
        recipe = {"schedule": lm.schedule, "self_condition": lm.self_condition}
        with torch.no_grad():
            x0_hat = model_x0(lm.denoiser, xt.to(dev), tt.to(dev), mask.to(dev), lm.objective, **recipe).cpu()
        states = lm.standardizer.inverse(x0_hat)
        states[:, :prefix] = hb[:, :prefix]
        logits, scored = iface.generated_logits(states, prefix)
        clean = iface.generated_logits(hb, prefix)[0].argmax(-1)
        target = ib[:, scored]
        if iface.probabilistic:
            part, n = covered_ce(logits, target)
            nll, covered = nll + part, covered + n
        pred = logits.argmax(-1)
        correct += int((pred == target).sum())
        agree += int((pred == clean).sum())
        count += target.numel()
    ce = nll / covered if iface.probabilistic and covered else None
    return {
        "recovery_ce": ce,
        "recovery_token_acc": correct / count,
        "recovery_clean_agreement": agree / count,
        "recovery_coverage": covered / count if iface.probabilistic else None,
    }


def clean_states(lm, cfg: StageConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation states, ids): the targets stage's h_ℓ for the bridge; a baseline's interface computes its own
    from the validation blocks its train stage sampled."""
    if "targets" in cfg.inputs:
        tdir = cfg.inputs["targets"]
        return torch.from_numpy(np.load(tdir / "val_h.npy")), torch.from_numpy(np.load(tdir / "val_ids.npy"))
    ids = torch.from_numpy(np.load(cfg.inputs["train"] / "val_ids.npy")).long()
    return lm.interface.clean_batched(ids), ids


def run(cfg: StageConfig) -> None:
    from dihal.analysis.mauve_metric import mauve_interval
    from dihal.analysis.text_metrics import perplexity_from_nll, text_metrics
    from dihal.bridge.hybrid import DiffusionLM

    p, ev = cfg.params, cfg.params["eval"]
    seed, prefix = p["seed"], p["prefix"]
    bb, ad = open_backbone(cfg.backbone_spec())
    hybrid = DiffusionLM.load(cfg.inputs["train"] / "bridge.pt", ad)
    true_h, ids = clean_states(hybrid, cfg)
    x0 = hybrid.standardizer.transform(true_h)
    name = hybrid.interface.name
    steps = progress.bar(
        total=5, desc=f"evaluate {'' if name == 'hidden' else name + ' '}L{hybrid.layer} s{seed}", unit="step"
    )
    with Timer() as timer:
        losses = val_losses(hybrid, x0, prefix, list(ev["t_grid"]), min(ev["val_batches"], len(x0)), seed)
        steps.update()
        rec = recovery(hybrid, x0, true_h, ids, prefix, ev["recovery_t"], seed)
        steps.update()
        n = ev["n_samples"]
        real = ids[torch.arange(n) % len(ids)].long()  # the blocks the prompts are cut from: MAUVE's real text
        prompts = real[:, :prefix]
        gen = hybrid.sample(prompts, steps=ev["sampling_steps"], temperature=ev["temperature"], generator=_gen(seed, 3))
        steps.update()
        verdict = judge(ad, gen.tokens, prefix)
        steps.update()
        quality = mauve_interval(judge(ad, real, prefix).features, verdict.features, seed)
        steps.update()
    steps.close()
    generated = [row[prefix:].tolist() for row in gen.tokens]
    texts = [bb.tokenizer.decode(row, skip_special_tokens=False) for row in generated]
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for i, (row, text) in enumerate(zip(gen.tokens.tolist(), texts)):
            f.write(json.dumps({"index": i, "prompt": row[:prefix], "tokens": row[prefix:], "text": text}) + "\n")
    digest = hashlib.sha256((out / "samples.jsonl").read_bytes()).hexdigest()
    metrics = {
        "interface": name,
        "layer": hybrid.layer,
        "seed": seed,
        "bridge_val_loss": float(np.mean(losses)),
        "val_batch_losses": losses,
        **rec,
        "gen_ppl": perplexity_from_nll(verdict.total_nll, verdict.n_tokens),
        "gen_nll": verdict.total_nll / verdict.n_tokens,
        "gen_tokens": verdict.n_tokens,
        **text_metrics(generated),
        **quality,
        "samples_digest": digest,
        "seconds": timer.seconds,
    }
    check_stage_finite(cfg, metrics, RESULT_METRICS["evaluate"])
    write_json(out / "metrics.json", metrics)
    write_results(cfg, dvc_files.evaluate_metrics(metrics))
