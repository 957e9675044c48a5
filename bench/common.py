"""Shared set-up for the benchmarks: the embedded backbone and real KJV blocks."""

from __future__ import annotations

import time

import numpy as np
import torch

from dihal.backbone import BackboneAdapter, load_backbone
from dihal.data.blocks import sample_blocks
from dihal.data.corpora import load_documents, split_documents
from dihal.data.tokens import resolve_block_start
from dihal.spec.schema import BackboneSpec, DataSpec


def embedded():
    bb = load_backbone(BackboneSpec())
    return bb, BackboneAdapter(bb.model)


def blocks(bb, n: int, seq_len: int = 64, split: str = "geometry") -> torch.Tensor:
    data = DataSpec()
    docs = split_documents(load_documents(data), data.splits)[split]
    start = resolve_block_start(bb.tokenizer, data.block_start)
    b = sample_blocks(
        docs,
        bb.tokenizer,
        start_id=start.id,
        seq_len=seq_len,
        n_blocks=n,
        seed=0,
        max_per_doc=data.max_blocks_per_document,
    )
    return torch.as_tensor(b.ids)


def timed(fn, repeat: int = 3) -> float:
    """Best of `repeat` wall times (seconds): the least disturbed by other work on the machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def header(title: str) -> None:
    print(f"\n== {title} (torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__})")
