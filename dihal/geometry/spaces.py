"""The space a layer's states are measured in before any proxy sees them.

The geometry proxies are statements about a point cloud, and which cloud depends on how a layer's
states are put on a common footing first. METHOD.md's default is **the space the bridge denoises**:
the bridge standardises its targets per channel (`dihal.bridge.standardize`), and its noise, its loss
and everything it learns live there. A proxy measured anywhere else describes a geometry the bridge
never faces. The difference is not academic: transformer states carry a few "rogue" channels, often
driven by token frequency, that hold most of the raw variance. Rescaled by one scalar, such a channel
makes a layer look low-rank and stiff; standardised per channel it has unit variance like every other,
and the layer's geometry is what the remaining channels make of it.

Registered spaces (each a pure function of one layer's states after the outlier rule, float64 out):

- `bridge`: per-channel standardisation with `channel_statistics`, the very function the
  Standardizer fits with, so the two cannot drift. Mean squared norm d by construction.
- `scalar`: centre, then rescale by one scalar so that the mean squared norm is d. Removes the norm
  growth with depth and keeps the covariance's shape, rogue channels included.

A space an installed plugin declares (entry point group `dihal.spaces`, `dihal.spec.plugins`) is imported the
first time it is asked for; importing it must register the entry point's name with `register_space`.

A run scores every space in `geometry.spaces` from one read of the states and takes ℓ* from
`geometry.space`; the ledger keeps all of them (`space` column), and C1 is reported per space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dihal.bridge.standardize import channel_statistics
from dihal.geometry.normalize import as_states, normalize_states
from dihal.spec import plugins
from dihal.spec.geometry import DEFAULT_SPACE

__all__ = ["DEFAULT_SPACE", "SPACES", "Space", "ensure_space", "register_space", "to_space"]


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    fn: Callable[[torch.Tensor], torch.Tensor]


SPACES: dict[str, Space] = {}


def register_space(name: str, description: str):
    """Decorator registering `fn(states float64 (N, d)) -> (N, d) float64`; a duplicate name is an error."""
    if name in SPACES:
        raise ValueError(f"a geometry space named {name!r} is already registered")

    def decorate(fn):
        SPACES[name] = Space(name, description, fn)
        return fn

    return decorate


@register_space(
    "bridge", "per-channel standardisation, as the bridge's Standardizer is fit (its noise and loss live here)"
)
def standardized(x: torch.Tensor) -> torch.Tensor:
    mean, std = channel_statistics(x)
    return (x - mean) / std


@register_space("scalar", "centred and rescaled by one scalar to mean squared norm d (keeps rogue channels)")
def one_scalar(x: torch.Tensor) -> torch.Tensor:
    return normalize_states(x)


def to_space(states, space: str) -> torch.Tensor:
    """One layer's states in `space`, float64 (validated: a finite (N >= 2, d) matrix)."""
    ensure_space(space)
    return SPACES[space].fn(as_states(states))


def ensure_space(name: str) -> None:
    """Make `name` registered, importing the plugin that declares it if it is not yet (see the module doc)."""
    plugins.ensure_registered("space", name, SPACES, "dihal.geometry.spaces.register_space")
