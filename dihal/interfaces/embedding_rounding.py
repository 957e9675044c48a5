"""embedding_rounding (Diffusion-LM style): generate the tokens' input embeddings, round to the nearest row.

The metric is stated in the spec (`baselines.rounding`): `cosine` compares directions only (embedding norms
vary with token frequency, and a denoised vector's norm is the least reliable part of it); `l2` is
Diffusion-LM's own. Rounding trains nothing (recovery budget 0) and gives a ranking, not a distribution:
its "logits" are similarities, so recovery accuracy is reported and recovery cross-entropy is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dihal.interfaces.base import Interface
from dihal.interfaces.embeddings import embedding_table, token_embeddings

METRICS = ("cosine", "l2")


class EmbeddingRounding(Interface):
    name = "embedding_rounding"
    shift = 0
    probabilistic = False

    def __init__(self, adapter, layer: int = 0, metric: str = "cosine") -> None:
        if metric not in METRICS:
            raise ValueError(f"rounding metric must be one of {METRICS}, got {metric!r}")
        super().__init__(adapter, 0)
        self.metric = metric
        self._table: torch.Tensor | None = None

    @property
    def table(self) -> torch.Tensor:
        if self._table is None:
            table = embedding_table(self.adapter)
            self._table = F.normalize(table, dim=-1) if self.metric == "cosine" else table
        return self._table

    def clean(self, ids: torch.Tensor) -> torch.Tensor:
        return token_embeddings(self.adapter, ids)

    @torch.no_grad()
    def logits(self, states: torch.Tensor) -> torch.Tensor:
        x = states.float().cpu()
        if self.metric == "cosine":
            return F.normalize(x, dim=-1) @ self.table.T
        # -||x - e||^2 up to a per-position constant (||x||^2), which no argmax sees
        return 2 * x @ self.table.T - (self.table * self.table).sum(-1)

    @classmethod
    def create(cls, adapter, settings: dict) -> EmbeddingRounding:
        return cls(adapter, metric=settings["rounding"])

    def state(self) -> dict:
        return {"layer": 0, "metric": self.metric}

    @classmethod
    def from_state(cls, adapter, state: dict) -> EmbeddingRounding:
        return cls(adapter, metric=state["metric"])
