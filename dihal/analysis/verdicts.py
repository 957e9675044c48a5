"""The sentences that say how far a number can be trusted, written once for the summary, the report and the ledger.

A bare "ℓ* = 7" or "ρ = -0.18 [-0.32, -0.05]" invites more confidence than the evidence gives. These
functions turn the stored statistics into words that say what each number covers:

- ℓ*: the share of document resamples in which it is the argmax, and which other layers are within its
  interval of G (their G on the full sample is above the lower end of ℓ*'s 95% interval, or they are the
  argmax in at least `CONTENDER_SHARE` of the resamples);
- C1: the permutation p-value over layers answers C1's question (does the ranking of layers by G beat a
  random ranking?), so it leads; the bootstrap interval covers measurement noise at the swept layers
  (seeds, validation batches, geometry documents), not which layers were swept, so it follows and says so.

Torch-free: the summary and the report import it without the stages' dependencies.
"""

from __future__ import annotations

import math

CLEAR_SHARE = 0.95  # at least this share of resamples and no contender: ℓ* is called clear
CONTENDER_SHARE = 0.05
ALPHA = 0.05


def _layers(xs: list[int]) -> str:
    xs = [str(x) for x in xs]
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def contenders(layer: int, layers: list[int], g: list[float], stab: dict | None) -> list[int]:
    """Other layers that a resample of the geometry documents could make ℓ*, by G descending."""
    if stab is None:
        return []
    lo = dict(zip(stab["layers"], stab["g_lo"]))
    share = dict(zip(stab["layers"], stab["argmax_share"]))
    floor = lo.get(layer)
    by_g = dict(zip(layers, g))
    out = [
        x
        for x in layers
        if x != layer and ((floor is not None and by_g[x] >= floor) or share.get(x, 0.0) >= CONTENDER_SHARE)
    ]
    return sorted(out, key=lambda x: -by_g[x])


def confidence(layer: int, scores: dict, stab: dict | None) -> str:
    """'ℓ* = 7 (bridge space) is uncertain: the argmax in 41% of 200 document resamples; 6 and 29 are within …'."""
    space = scores.get("space")
    where = f" ({space} space)" if space else ""
    if stab is None:
        return (
            f"ℓ* = {layer}{where}: no stability bootstrap was run (geometry.n_boot = 0), so how sure it is is unknown"
        )
    share = dict(zip(stab["layers"], stab["argmax_share"])).get(layer, 0.0)
    rivals = contenders(layer, scores["layers"], scores["score"], stab)
    clear = share >= CLEAR_SHARE and not rivals
    head = f"ℓ* = {layer}{where} is {'clear' if clear else 'uncertain'}: the argmax in {share:.0%} of {stab['n_boot']} document resamples"
    if rivals:
        verb = "is" if len(rivals) == 1 else "are"
        return f"{head}; {_layers(rivals[:5])}{' and others' if len(rivals) > 5 else ''} {verb} within its 95% interval of G"
    return f"{head}; no other layer is within its 95% interval of G"


def c1_verdict(
    space: str | None,
    rho: float,
    lo: float | None,
    hi: float | None,
    p: float | None,
    n_layers: int,
    resampled: str | None = None,
) -> str:
    """C1 in words, the permutation test first."""
    where = f" in the {space} space" if space else ""
    if rho is None or not math.isfinite(rho):
        return f"C1{where}: no Spearman ρ(G, bridge loss): G or the bridge loss does not vary across the layers."
    if p is None:
        test = "no permutation test was run"
    elif p < ALPHA:
        direction = (
            "a higher G goes with a lower bridge loss" if rho < 0 else "a higher G goes with a HIGHER bridge loss"
        )
        test = f"{direction}, beyond a random ranking of the {n_layers} layers (permutation p = {p:.3g})"
    else:
        test = f"the ranking of the {n_layers} layers by G is not distinguishable from chance (permutation p = {p:.3g})"
    head = f"C1{where}: Spearman ρ(G, bridge loss) = {rho:+.3f}; {test}."
    if lo is None or hi is None:
        return head
    covers = (resampled or "seeds, validation batches and geometry documents").rstrip(". ")
    return (
        f"{head} Its interval [{lo:+.3f}, {hi:+.3f}] covers measurement noise at these {n_layers} layers "
        f"({covers}), not the choice of layers."
    )
