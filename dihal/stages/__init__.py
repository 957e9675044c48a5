"""The pipeline's stages. Each reads one frozen config and writes its DVC output directory."""

from __future__ import annotations

from pathlib import Path


def run_stage(config_path: Path | str) -> None:
    import torch

    from dihal.stages import correlate, evaluate, extract, score, targets, train
    from dihal.stages.common import StageConfig

    cfg = StageConfig.read(config_path)
    torch.use_deterministic_algorithms(True, warn_only=True)
    runners = {
        "extract": extract.run,
        "score": score.run_score,
        "select": score.run_select,
        "targets": targets.run,
        "train": train.run,
        "evaluate": evaluate.run,
        "correlate": correlate.run,
    }
    if cfg.kind not in runners:
        raise ValueError(f"unknown stage kind {cfg.kind!r} in {config_path}")
    runners[cfg.kind](cfg)
