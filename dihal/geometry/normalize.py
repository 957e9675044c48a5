"""Per-layer normalisation of hidden states before any geometry proxy.

The residual stream's norm grows with depth, so raw states at a deep layer are
simply *bigger* than at a shallow one; left alone, that growth dominates every
proxy and the layer comparison measures scale, not shape. METHOD.md therefore
centres each layer's states and rescales them by a single scalar so that the
mean squared norm equals the width d. One scalar (not a per-dimension
standardisation) keeps the covariance's *shape* -- its anisotropy and
effective rank -- exactly as the backbone made it.

Everything is done in float64: states arrive as float32 from disk, and the
covariance, its eigenvalues and the quadratic forms downstream lose digits
quickly when the mean is large compared with the spread (e.g. massive
activations in a few channels).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["as_states", "normalize_states"]


def as_states(x) -> torch.Tensor:
    """Coerce an (N, d) array or tensor to float64, on the device it came on.

    Validation lives here because every proxy assumes a finite 2-D matrix
    with at least two rows; failing early gives a message about the *input*
    instead of a NaN three functions later.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"states must be a 2-D (N, d) matrix, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"states must be a real numeric matrix, got dtype {t.dtype}")
    t = t.to(torch.float64)
    n, d = t.shape
    if n < 2 or d < 1:
        raise ValueError(f"need at least 2 states of width >= 1, got shape {(n, d)}")
    # min/max propagate NaN and expose +-inf, at a sixth of the cost of isfinite().all().
    lo, hi = torch.aminmax(t)
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise ValueError("states contain NaN or infinite values")
    return t


def normalize_states(x) -> torch.Tensor:
    """Centre, then scale by one scalar so that mean_i ||x_i||^2 == d.

    A layer whose states are all identical has no geometry to measure (the
    scale factor would be 1/0), so that is an error rather than a silent
    division producing NaNs.
    """
    t = as_states(x)
    n, d = t.shape
    centred = t - t.mean(dim=0, keepdim=True)
    mean_sq_norm = float(torch.linalg.vector_norm(centred)) ** 2 / n
    if not mean_sq_norm > 0:
        raise ValueError("all states are identical after centring; the layer has no spread to normalise")
    return centred.mul_(math.sqrt(d / mean_sq_norm))
