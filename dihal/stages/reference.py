"""reference: the rows that give a bridge's generative perplexity a scale, with no training.

Judged by the same judge as the bridge (the unmodified backbone, NLL over the positions after the prefix:
`dihal.analysis.judge.judge_nll`) and measured with the same text metrics, from the same validation blocks the
targets stage gives the bridge (same function, same spec seed), so the rows sit next to the bridge's:

- `backbone_t1`: the backbone's own samples, ancestral sampling at temperature 1 (full softmax);
- `backbone_greedy`: greedy decoding (the same for every seed: nothing is drawn);
- `real_text`: `eval.n_samples` held-out validation blocks themselves (a seeded permutation of the pool).

Prompts are the first `bridge.prefix` tokens of validation blocks, chosen as evaluate chooses them; every
sample is `bridge.seq_len` tokens long. One row per (reference, bridge seed). The stage reads no geometry,
selection or bridge output, so no change to those re-runs it.

MAUVE (`dihal.analysis.mauve_metric`) compares each row with the real text evaluate compares the bridge with:
the `eval.n_samples` blocks the prompts are cut from. For `real_text` that set is the ceiling, measured against
blocks disjoint from it: a seeded draw of up to `n_samples` of the pool's other blocks (`ceiling_blocks`); with
no other block in the pool (`bridge.n_val` <= `n_samples`) its MAUVE is left out (None).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

import dihal.stages.dvc_files as dvc_files
from dihal.analysis.judge import judge
from dihal.stages.common import (
    RESULT_METRICS,
    StageConfig,
    Timer,
    check_stage_finite,
    open_backbone,
    sample_split_blocks,
    save_array,
    write_json,
    write_results,
)
from dihal.utils import progress

REFERENCES = ("backbone_t1", "backbone_greedy", "real_text")
_SALT = {"backbone_t1": 11, "real_text": 12, "ceiling": 13}  # evaluate's salts are 1..3; greedy draws nothing
BATCH = 32  # sequences decoded together


def _gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)  # as evaluate seeds its draws


@torch.no_grad()
def sample_backbone(
    adapter,
    prompts: torch.Tensor,
    length: int,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    batch: int = BATCH,
    bar=None,
) -> torch.Tensor:
    """Continue each prompt to `length` tokens with the backbone: argmax (`greedy`, or temperature 0), or a draw
    from the full softmax at `temperature` (CPU generator, so every device sees the same draws; at 1 the logits
    are used as they are, so those draws are the ones temperature 1 always gave). The model's own forward with its KV
    cache, as `generate` runs it (the judge scores the finished sequences without a cache): a step costs one
    token's forward instead of the whole running sequence's, ~5x faster at the quickstart's 64 tokens."""
    model, out = adapter.model, []
    for i in range(0, len(prompts), batch):
        seq = prompts[i : i + batch].to(adapter.device)
        past, step = None, seq
        with torch.no_grad():
            while seq.shape[1] < length:
                res = model(step, past_key_values=past, use_cache=True)
                past, logits = res.past_key_values, res.logits[:, -1].float().cpu()
                if greedy or temperature == 0:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    scaled = logits if temperature == 1 else logits / temperature
                    nxt = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
                step = nxt.to(seq.device, seq.dtype)
                seq = torch.cat([seq, step], dim=1)
                if bar is not None:
                    bar.update(seq.shape[0])
        out.append(seq.cpu())
    return torch.cat(out) if out else prompts[:, :length].clone()


def real_text_blocks(n_blocks: int, n: int, seed: int) -> torch.Tensor:
    """Which validation blocks real_text scores for a seed: a seeded permutation of the pool, first n
    (cycled when n exceeds the pool)."""
    perm = torch.randperm(n_blocks, generator=_gen(seed, _SALT["real_text"]))
    return perm[torch.arange(n) % n_blocks]


def ceiling_blocks(n_blocks: int, n: int, seed: int) -> torch.Tensor:
    """Which validation blocks real_text's MAUVE ceiling reads for a seed: a seeded draw of up to n blocks from
    those the prompts are not cut from (blocks n.. of the pool), so no text sits on both sides; empty when the
    pool holds no other block."""
    others = torch.arange(min(n, n_blocks), n_blocks)
    return others[torch.randperm(len(others), generator=_gen(seed, _SALT["ceiling"]))][:n]


def run(cfg: StageConfig) -> None:
    from dihal.analysis.mauve_metric import MAUVE_KEYS, mauve_interval
    from dihal.analysis.text_metrics import perplexity_from_nll, text_metrics

    p = cfg.params
    b, n, seeds = p["bridge"], p["n_samples"], list(p["seeds"])
    T, prefix = b["seq_len"], b["prefix"]
    bb, ad = open_backbone(cfg.backbone_spec())
    blocks, _, _ = sample_split_blocks(cfg, bb.tokenizer, "validation", seq_len=T, n_blocks=b["n_val"], seed=p["seed"])
    ids = torch.from_numpy(np.asarray(blocks.ids)).long()
    real = ids[torch.arange(n) % len(ids)]  # exactly evaluate's real text for MAUVE
    prompts = real[:, :prefix]  # and its prompts
    real_features = judge(ad, real, prefix).features
    bar = progress.bar(total=len(seeds) * 2 * n * (T - prefix), desc="reference: backbone samples", unit="tok")
    rows, lines = [], []
    greedy = None  # the same for every seed: decoded once
    for seed in seeds:
        for ref in REFERENCES:
            extra: dict = {}
            with Timer() as timer:
                if ref == "backbone_t1":
                    tokens = sample_backbone(ad, prompts, T, generator=_gen(seed, _SALT[ref]), bar=bar)
                elif ref == "backbone_greedy":
                    if greedy is None:
                        greedy = sample_backbone(ad, prompts, T, greedy=True, bar=bar)
                    else:
                        bar.update(n * (T - prefix))
                    tokens = greedy
                else:
                    chosen = real_text_blocks(len(ids), n, seed)
                    tokens = ids[chosen]
                    extra["blocks"] = chosen.tolist()
                verdict = judge(ad, tokens, prefix)
                total, count = verdict.total_nll, verdict.n_tokens
                if ref == "real_text":  # the ceiling: real text against real text from other blocks
                    ceiling = ceiling_blocks(len(ids), n, seed)
                    extra["ceiling_blocks"] = ceiling.tolist()
                    q = judge(ad, ids[ceiling], prefix).features if len(ceiling) >= 2 else None
                else:
                    q = verdict.features
                quality = mauve_interval(real_features, q, seed) if q is not None else dict.fromkeys(MAUVE_KEYS)
            generated = [row[prefix:].tolist() for row in tokens]
            group = []  # evaluate's samples.jsonl lines: the digest names the samples, whatever seed drew them
            for i, row in enumerate(tokens.tolist()):
                text = bb.tokenizer.decode(row[prefix:], skip_special_tokens=False)
                group.append({"index": i, "prompt": row[:prefix], "tokens": row[prefix:], "text": text})
            lines += [json.dumps({"reference": ref, "seed": seed, **g}) for g in group]
            rows.append(
                {
                    "reference": ref,
                    "seed": seed,
                    "gen_ppl": perplexity_from_nll(total, count),
                    "gen_nll": total / count,
                    "gen_tokens": count,
                    **text_metrics(generated),
                    **quality,
                    "n_samples": n,
                    "seq_len": T,
                    "prefix": prefix,
                    "samples_digest": hashlib.sha256("".join(json.dumps(g) + "\n" for g in group).encode()).hexdigest(),
                    "seconds": timer.seconds,
                    **extra,
                }
            )
    bar.close()
    for row in rows:
        check_stage_finite(cfg, row, RESULT_METRICS["reference"])
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    save_array(out / "val_ids.npy", np.asarray(blocks.ids))  # the pool prompts and real_text come from
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    write_json(out / "references.json", rows)
    write_results(cfg, dvc_files.reference_metrics(rows))
