"""Per-dimension standardisation of hidden-state targets.

Hidden states have per-dimension scales that differ by orders of magnitude (a few
"massive activation" dimensions dominate), and the VP forward process assumes roughly
unit-variance data: without standardising, noise at a given t would drown some
dimensions and barely touch others. The statistics belong to the bridge (they are needed
to de-standardise its samples), so they travel in its state dict.

Fitting on the training split only is the caller's job: this module cannot know the split.

`channel_statistics` is the one definition of "the bridge's space": the Standardizer fits with it, and
the geometry's `bridge` space (`dihal.geometry.spaces`) standardises a layer's sample with it, so the
space the proxies measure can never drift from the space the denoiser works in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _select_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Flatten (N, T, d) or (M, d) to (rows, d), keeping rows where mask is True."""
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be (N, T, d) or (M, d), got shape {tuple(x.shape)}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        if tuple(mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal x.shape[:-1] = {tuple(x.shape[:-1])}")
        return x[mask.to(x.device)]
    return x.reshape(-1, x.shape[-1])


def channel_statistics(rows: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel population mean and std of (M, d) rows, float64, std floored at `eps`.

    Population (not unbiased) so the fitted rows come out with exactly unit variance. The std is floored
    rather than having eps added: non-degenerate channels are standardised exactly, and only a channel
    that is constant on the rows (std below eps) is left unscaled-but-centred instead of blowing up.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if rows.ndim != 2:
        raise ValueError(f"rows must be an (M, d) matrix, got shape {tuple(rows.shape)}")
    if rows.shape[0] < 2:
        raise ValueError(f"need at least 2 selected vectors to fit, got {rows.shape[0]}")
    rows = rows.detach().to(torch.float64)
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("x contains NaN or inf among the selected vectors")
    return rows.mean(dim=0), rows.var(dim=0, unbiased=False).sqrt().clamp_min(eps)


@dataclass
class Standardizer:
    """x_std = (x - mean) / std, per dimension; mean and std are float32 (d,) tensors."""

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.std.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean and std must be 1-D of equal length, got {tuple(self.mean.shape)} and {tuple(self.std.shape)}"
            )
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()):
            raise ValueError("mean and std must be finite")
        if not bool((self.std > 0).all()):
            raise ValueError("std must be strictly positive in every dimension")
        self.mean = self.mean.detach().to(torch.float32)
        self.std = self.std.detach().to(torch.float32)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6) -> Standardizer:
        """Fit with `channel_statistics` on the rows `mask` selects (shape x.shape[:-1], True = use).

        The mask excludes padding or the BOS position, whose huge-norm state would otherwise
        dominate the statistics.
        """
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        mean, std = channel_statistics(_select_rows(x, mask), eps)
        return cls(mean=mean.to(torch.float32).cpu(), std=std.to(torch.float32).cpu())

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"last dimension of x is {x.shape[-1]}, standardizer has d={self.dim}")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x.to(torch.float32) - mean) / std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return x.to(torch.float32) * std + mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Standardizer:
        missing = {"mean", "std"} - set(state)
        extra = set(state) - {"mean", "std"}
        if missing or extra:
            raise KeyError(
                f"standardizer state needs exactly 'mean' and 'std'; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        return cls(mean=state["mean"].clone(), std=state["std"].clone())
