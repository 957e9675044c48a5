"""One layer's states in their space and the intermediates its proxies share.

Several proxies need the same expensive intermediates -- the d x d covariance and its eigendecomposition
(sigma, erank), the anchors' nearest neighbours (kappa, TwoNN) -- so one :class:`ProxyContext` is built per
layer and computes each of them lazily, at most once, for whichever proxies ask.

Randomness: the anchor set and the random pairs are drawn eagerly, in a fixed order, when the context is
built. If they were drawn lazily from the shared generator, kappa's anchors would depend on whether sigma
happened to run first, and adding a proxy to a spec would silently change the others' values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from dihal.geometry.knn import knn
from dihal.geometry.normalize import as_states
from dihal.geometry.spaces import DEFAULT_SPACE, to_space
from dihal.spec.geometry import ANCHORS, NEIGHBOURS, PAIRS, RIDGE

_CHUNK = 256

__all__ = ["ProxyContext"]


def _check_int(name: str, value: int, minimum: int) -> int:
    """Integer hyper-parameters must be real ints; 16.5 neighbours is a spec bug."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass
class ProxyContext:
    """One layer's states and the intermediates its proxies share.

    ``raw`` keeps the uncentred states because some conventions (anisotropy as
    mean cosine similarity) are *about* the offset that normalisation removes.
    ``generator`` is left for custom proxies that need their own draws; the
    built-in ones use ``anchor_index`` and ``pair_index`` only.
    """

    raw: torch.Tensor
    x: torch.Tensor
    anchors: int
    k: int
    pairs: int
    ridge: float
    generator: torch.Generator
    anchor_index: torch.Tensor = field(init=False, repr=False)
    pair_index: tuple[torch.Tensor, torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.anchors = _check_int("anchors", self.anchors, 1)
        self.k = _check_int("k", self.k, 1)
        self.pairs = _check_int("pairs", self.pairs, 1)
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError(f"ridge must be a positive finite number, got {self.ridge!r}")
        if self.x.shape != self.raw.shape:
            raise ValueError(f"x has shape {tuple(self.x.shape)} but raw has {tuple(self.raw.shape)}")
        n = self.n
        device = self.x.device
        # Without replacement: a repeated anchor would count its neighbourhood twice in the median.
        self.anchor_index = torch.randperm(n, generator=self.generator)[: min(self.anchors, n)].to(device)
        # j = i + offset (mod N) with offset in [1, N) is uniform over j != i.
        i = torch.randint(0, n, (self.pairs,), generator=self.generator)
        offset = torch.randint(1, n, (self.pairs,), generator=self.generator)
        self.pair_index = (i.to(device), ((i + offset) % n).to(device))

    @classmethod
    def from_states(
        cls,
        states,
        *,
        anchors: int = ANCHORS,
        k: int = NEIGHBOURS,
        pairs: int = PAIRS,
        ridge: float = RIDGE,
        seed: int = 0,
        space: str = DEFAULT_SPACE,
    ) -> ProxyContext:
        """Build the context for one layer: validate, put the states in `space` (`geometry/spaces.py`), seed, draw.

        The draws depend on N and the seed only, so every space of one layer uses the same anchors and pairs.
        """
        raw = as_states(states)
        generator = torch.Generator().manual_seed(_check_int("seed", seed, 0))
        return cls(
            raw=raw,
            x=to_space(raw, space),
            anchors=anchors,
            k=k,
            pairs=pairs,
            ridge=float(ridge),
            generator=generator,
        )

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    @cached_property
    def cov(self) -> torch.Tensor:
        """Unbiased (1/(N-1)) covariance of the states in their space, float64."""
        # every space centres x; re-centring would only add rounding.
        return (self.x.T @ self.x) / (self.n - 1)

    @cached_property
    def _eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        vals, vecs = torch.linalg.eigh(self.cov)
        return vals, vecs

    @cached_property
    def eigvals(self) -> torch.Tensor:
        """Eigenvalues of ``cov``, ascending, clipped at 0.

        A PSD matrix's smallest eigenvalues come out as -1e-16-ish from
        rounding; clipping keeps entropies real and (cov + lambda I) positive.
        """
        return self._eigh[0].clamp_min(0.0)

    @cached_property
    def eigvecs(self) -> torch.Tensor:
        """Orthonormal eigenvectors of ``cov`` as columns, matching ``eigvals``."""
        return self._eigh[1]

    @cached_property
    def anchor_neighbours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distances, indices) of each anchor's nearest other points.

        Computes max(k, 2) neighbours (capped at N-1) once, so kappa's k and
        TwoNN's first two share one kNN pass; the anchor itself is excluded
        by index, while its duplicates count as neighbours at distance 0.
        """
        m = min(max(self.k, 2), self.n - 1)
        return knn(self.x[self.anchor_index], self.x, m, exclude=self.anchor_index)

    @cached_property
    def anchor_spread(self) -> torch.Tensor:
        """s_i = tr(C_i)/d of each anchor's k-neighbourhood (unbiased C_i); kappa = -log median s_i.

        Kept per anchor because the stability bootstrap reweights anchors by document.
        """
        _, idx = self.anchor_neighbours
        idx = idx[:, : self.k]
        parts = []
        # Chunked so the gathered (chunk, k, d) block stays small even with anchors = N.
        for start in range(0, idx.shape[0], _CHUNK):
            nb = self.x[idx[start : start + _CHUNK]]
            centred = nb - nb.mean(dim=1, keepdim=True)
            parts.append(torch.linalg.vector_norm(centred, dim=(1, 2)).square_())
        return torch.cat(parts) / ((self.k - 1) * self.d)

    @cached_property
    def pair_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """((v_j' dx_p)^2 for every pair p and eigenvector j, ||dx_p||^2) of the random pairs.

        sigma's Rayleigh quotients for any P diagonal in the eigenbasis are one matrix
        product away from these, which is what the stability bootstrap needs.
        """
        i, j = self.pair_index
        delta = self.x[i] - self.x[j]
        return (delta @ self.eigvecs).square_(), torch.linalg.vector_norm(delta, dim=1).square_()
