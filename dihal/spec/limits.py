"""Upper bounds that catch absurd values at validate time, and the spec's explicit way past them.

`bridge.steps: 1000000000000` is a valid integer and a run that never ends; `bridge.d_model: 1000000`
dies at train after extract and targets have run. Each bound here is far above any setting METHOD.md
or the shipped specs use, and says why it exists. A researcher who means it lists the field under
`allow_large:` (not part of the spec hash: it permits, it does not change what is computed). The
hard bound -- what the ledger's 32-bit integers can store -- has no opt-out; it lives in the schema.
"""

from __future__ import annotations

from pydantic import BaseModel  # the validated Spec, which imports this module

# field path -> (largest value without allow_large, why a larger one is suspicious)
SOFT_LIMITS: dict[str, tuple[int, str]] = {
    "geometry.seq_len": (8192, "tokens per block, beyond most backbones' context"),
    "geometry.n_tokens": (1 << 20, "states per candidate layer, all written to disk and scored in memory"),
    "geometry.batch_size": (4096, "blocks per forward pass"),
    "geometry.anchors": (1 << 16, "kappa computes anchors x n_tokens distances"),
    "geometry.k": (1024, "neighbours per anchor"),
    "geometry.pairs": (1 << 20, "sigma solves one system per pair"),
    "geometry.n_boot": (10_000, "bootstrap replicates of every proxy at every layer"),
    "bridge.seq_len": (8192, "tokens per training block, beyond most backbones' context"),
    "bridge.n_train": (1 << 20, "training blocks whose layer states are extracted and stored"),
    "bridge.n_val": (1 << 16, "validation blocks"),
    "bridge.extract_batch_size": (4096, "blocks per forward pass"),
    "bridge.d_model": (8192, "denoiser width: parameters grow with its square"),
    "bridge.depth": (128, "denoiser blocks"),
    "bridge.heads": (256, "attention heads"),
    "bridge.steps": (1_000_000, "optimizer steps per bridge"),
    "bridge.batch_size": (4096, "blocks per optimizer step"),
    "bridge.seeds": (100, "bridges trained per layer (a list this long)"),
    "eval.t_grid": (100, "noise levels evaluated per batch (a list this long)"),
    "eval.val_batches": (10_000, "validation batches per noise level"),
    "eval.n_samples": (10_000, "texts generated per bridge"),
    "eval.sampling_steps": (10_000, "denoising steps per generated text"),
    "eval.frontier.n_samples": (10_000, "texts generated per frontier point"),
    "eval.n_boot": (100_000, "bootstrap replicates of the correlation"),
    "baselines.recovery_steps": (1_000_000, "optimizer steps per readout or autoencoder"),
    "baselines.recovery_batch_tokens": (1 << 20, "tokens per recovery step"),
    "baselines.latent_width": (65_536, "latent width: the denoiser's projections grow with it"),
    "baselines.latent_d_model": (8192, "autoencoder width: parameters grow with its square"),
    "baselines.latent_depth": (128, "autoencoder blocks"),
}
_LISTS = frozenset({"bridge.seeds", "eval.t_grid"})  # bounded by their length


def _value(spec: BaseModel, path: str):
    cur = spec
    for part in path.split("."):
        cur = getattr(cur, part, None)
        if cur is None:
            return None
    return len(cur) if isinstance(cur, tuple) else cur


def limit_problems(spec: BaseModel) -> list[tuple[str, object, str]]:
    """Problems for each value over its bound that `allow_large` does not name, variants included."""
    problems: list[tuple[str, object, str]] = []
    for i, name in enumerate(spec.allow_large):
        if name not in SOFT_LIMITS:
            problems.append((f"allow_large[{i}]", name, f"a field with an upper bound: {', '.join(SOFT_LIMITS)}"))
    allowed = set(spec.allow_large)
    variants = [(f"sensitivity[{i}].", spec.variant(v.name)) for i, v in enumerate(spec.sensitivity)]
    for path, (limit, why) in SOFT_LIMITS.items():
        main = _value(spec, path)
        for prefix, s in [("", spec), *variants]:
            value = main if not prefix else _value(s, path)
            if path in allowed or value is None or value <= limit or (prefix and value == main):
                continue  # a variant inherits the main spec's value: it is reported once, where it is written
            counted = " entries" if path in _LISTS else ""
            problems.append(
                (
                    prefix + path,
                    value,
                    f"at most {limit:,}{counted} ({why}); if you mean it, add '{path}' to allow_large",
                )
            )
    return problems
