"""frontier: how gen PPL trades against diversity as sampling loosens (`eval.frontier`).

One number per row hides a trade: a bridge that samples at temperature 0 can buy a low perplexity with repetitive
text, and one point cannot say whether it is better or only greedier than another. So each trained bridge (the
bridge at every trained layer and seed, each C3 baseline interface) is sampled at every (temperature, DDIM steps)
point, and the backbone's own ancestral samples at every temperature (steps: None) give the reference curve.

Everything else is evaluate's: the prompts and the real text are the first `n_samples` validation blocks evaluate
cuts them from, the judge is the unmodified backbone (NLL after the prefix), the text metrics and MAUVE
(`dihal.analysis.mauve_metric`, against that real text) are the same functions. Each point draws from a fresh
generator seeded as evaluate seeds its samples (the backbone's as the reference stage seeds `backbone_t1`), so the
same spec gives the same numbers, a point that matches `eval` (temperature, steps, n_samples) reproduces evaluate's
row, and the backbone's points at temperature 1 and 0 reproduce `backbone_t1` and `backbone_greedy`.

Writes `frontier.json` (one row per point, `ROW_KEYS`) and `samples.jsonl` (the texts, keyed by point).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from dihal.analysis.judge import judge
from dihal.stages.common import (
    GEN_METRICS,
    RESULT_METRICS,
    StageConfig,
    check_stage_finite,
    open_backbone,
    sample_split_blocks,
    write_json,
)
from dihal.stages.evaluate import _gen
from dihal.stages.reference import _SALT, sample_backbone
from dihal.utils import progress

BACKBONE = "backbone"  # the `interface` of the backbone's own rows
EVALUATE_SAMPLE_SALT = 3  # evaluate draws its samples from _gen(seed, 3)
# One frontier.json row; the ledger's frontier_points columns are these plus the spec hash, stage and provenance.
ROW_KEYS = ("interface", "layer", "seed", "temperature", "steps", *GEN_METRICS, "n_samples", "samples_digest")


def _prompt_pool(cfg: StageConfig) -> torch.Tensor:
    """The validation blocks evaluate cuts its prompts from: the targets stage's, or a baseline's own."""
    src = cfg.inputs["targets"] if "targets" in cfg.inputs else cfg.inputs["train"]
    return torch.from_numpy(np.load(src / "val_ids.npy")).long()


def _point(tokens: torch.Tensor, verdict, real_features, prefix: int, where: dict, tok) -> tuple[dict, list[str]]:
    """(row, samples.jsonl lines) of one point from its sampled tokens and the judge's verdict on them; the
    digest names the lines, as evaluate's names its samples.jsonl."""
    from dihal.analysis.mauve_metric import mauve_interval
    from dihal.analysis.text_metrics import perplexity_from_nll, text_metrics

    generated = [row[prefix:].tolist() for row in tokens]
    lines = [
        json.dumps(
            {
                **where,
                "index": i,
                "prompt": row[:prefix],
                "tokens": row[prefix:],
                "text": tok.decode(row[prefix:], skip_special_tokens=False),
            }
        )
        for i, row in enumerate(tokens.tolist())
    ]
    row = {
        **where,
        "gen_ppl": perplexity_from_nll(verdict.total_nll, verdict.n_tokens),
        "gen_nll": verdict.total_nll / verdict.n_tokens,
        **text_metrics(generated),
        **mauve_interval(real_features, verdict.features, where["seed"]),
        "n_samples": len(tokens),
        "samples_digest": hashlib.sha256("".join(x + "\n" for x in lines).encode()).hexdigest(),
    }
    return {k: row[k] for k in ROW_KEYS}, lines


def _bridge_points(cfg: StageConfig, bb, ad) -> tuple[list[dict], list[str]]:
    from dihal.bridge.hybrid import DiffusionLM

    p, fr = cfg.params, cfg.params["frontier"]
    seed, prefix, n = p["seed"], p["prefix"], fr["n_samples"]
    hybrid = DiffusionLM.load(cfg.inputs["train"] / "bridge.pt", ad)
    ids = _prompt_pool(cfg)
    real = ids[torch.arange(n) % len(ids)]  # evaluate's real text and prompts, at the frontier's n_samples
    real_features = judge(ad, real, prefix).features
    name = hybrid.interface.name
    points = [(t, k) for k in fr["steps"] for t in fr["temperatures"]]
    bar = progress.bar(
        total=len(points), desc=f"frontier {'' if name == 'hidden' else name + ' '}L{hybrid.layer} s{seed}", unit="pt"
    )
    rows, lines = [], []
    for t, k in points:
        gen = hybrid.sample(real[:, :prefix], steps=k, temperature=t, generator=_gen(seed, EVALUATE_SAMPLE_SALT))
        where = {"interface": name, "layer": hybrid.layer, "seed": seed, "temperature": t, "steps": k}
        row, more = _point(gen.tokens, judge(ad, gen.tokens, prefix), real_features, prefix, where, bb.tokenizer)
        rows.append(row)
        lines += more
        bar.update()
    bar.close()
    return rows, lines


def _backbone_points(cfg: StageConfig, bb, ad) -> tuple[list[dict], list[str]]:
    p, b, fr = cfg.params, cfg.params["bridge"], cfg.params["frontier"]
    T, prefix, n = b["seq_len"], b["prefix"], fr["n_samples"]
    blocks, _, _ = sample_split_blocks(cfg, bb.tokenizer, "validation", seq_len=T, n_blocks=b["n_val"], seed=p["seed"])
    ids = torch.from_numpy(np.asarray(blocks.ids)).long()
    real = ids[torch.arange(n) % len(ids)]  # the reference stage's (and evaluate's) real text and prompts
    real_features = judge(ad, real, prefix).features
    temps = list(fr["temperatures"])
    bar = progress.bar(total=len(p["seeds"]) * len(temps) * n * (T - prefix), desc="frontier: backbone", unit="tok")
    rows, lines, greedy = [], [], None
    for seed in p["seeds"]:
        for t in temps:
            if t == 0 and greedy is not None:  # nothing is drawn: the same for every seed
                tokens = greedy
                bar.update(n * (T - prefix))
            else:
                tokens = sample_backbone(
                    ad, real[:, :prefix], T, temperature=t, generator=_gen(seed, _SALT["backbone_t1"]), bar=bar
                )
                greedy = tokens if t == 0 else greedy
            where = {"interface": BACKBONE, "layer": None, "seed": seed, "temperature": t, "steps": None}
            row, more = _point(tokens, judge(ad, tokens, prefix), real_features, prefix, where, bb.tokenizer)
            rows.append(row)
            lines += more
    bar.close()
    return rows, lines


def run(cfg: StageConfig) -> None:
    bb, ad = open_backbone(cfg.backbone_spec())
    rows, lines = _bridge_points(cfg, bb, ad) if "train" in cfg.inputs else _backbone_points(cfg, bb, ad)
    for row in rows:
        check_stage_finite(cfg, row, RESULT_METRICS["frontier"])
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").write_text("".join(x + "\n" for x in lines))
    write_json(out / "frontier.json", rows)
