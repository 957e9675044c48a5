"""Evaluate the registered geometry proxies on a layer: the driver the score stage and the tests share.

Importing this module registers the built-in proxies (kappa, sigma, erank, twonn, anisotropy); a name an
installed plugin declares (entry point group `dihal.proxies`, `dihal.spec.plugins`) is imported the first time
it is asked for, in whichever process asks -- a `dihal stage` subprocess included -- so a name known to the
spec is known here.
"""

from __future__ import annotations

from collections.abc import Sequence

import dihal.geometry.builtin_proxies  # noqa: F401  (registers the built-in proxies)
from dihal.geometry.context import ProxyContext
from dihal.geometry.registry import PROXIES, Proxy, register_proxy
from dihal.geometry.spaces import DEFAULT_SPACE
from dihal.spec import plugins
from dihal.spec.geometry import ANCHORS, NEIGHBOURS, PAIRS, RIDGE, STANDARD

__all__ = [
    "PROXIES",
    "Proxy",
    "ProxyContext",
    "compute_layer_proxies",
    "ensure_proxies",
    "evaluate_proxies",
    "register_proxy",
]


def ensure_proxies(names: Sequence[str]) -> None:
    """Make every name registered, importing the plugin that declares each one not registered yet.

    Raises ValueError (with a did-you-mean) for a name nothing provides, and `PluginError` naming the
    distribution and entry point for a plugin that fails to import or does not register its name.
    """
    for name in names:
        plugins.ensure_registered("proxy", name, PROXIES, "dihal.geometry.registry.register_proxy")


def compute_layer_proxies(
    states,
    *,
    proxies: Sequence[str] = STANDARD,
    anchors: int = ANCHORS,
    k: int = NEIGHBOURS,
    pairs: int = PAIRS,
    ridge: float = RIDGE,
    seed: int = 0,
    space: str = DEFAULT_SPACE,
) -> dict[str, float]:
    """Return {name: value} for each requested proxy plus its auxiliaries, measured in `space`.

    Names are checked before any computation so a typo in a spec fails in
    milliseconds, not after the covariance of a large layer.
    """
    if isinstance(proxies, str):
        raise TypeError("proxies must be a sequence of names, not a single string")
    names = list(dict.fromkeys(proxies))
    ensure_proxies(names)
    ctx = ProxyContext.from_states(states, anchors=anchors, k=k, pairs=pairs, ridge=ridge, seed=seed, space=space)
    return evaluate_proxies(ctx, names)


def evaluate_proxies(ctx: ProxyContext, names: Sequence[str]) -> dict[str, float]:
    """The proxies on a built context (kept by callers that reuse its intermediates, e.g. the bootstrap)."""
    ensure_proxies(names)
    out: dict[str, float] = {}
    for name in names:
        result = PROXIES[name].fn(ctx)
        if name not in result:
            raise RuntimeError(f"proxy {name!r} did not return a value under its own name (got {sorted(result)})")
        out.update({key: float(value) for key, value in result.items()})
    return out
