"""The proxy registry: each geometry proxy is a named pure function of one layer's context with a declared sign.

Proxies are pluggable (METHOD.md, "Locate"): a spec picks which ones enter the geometry score G and with
which sign, so each proxy is registered with its convention (``higher_is_better`` is the sign it gets in G
by default, ``description`` says what it measures). The built-in ones live in
:mod:`dihal.geometry.builtin_proxies`; :mod:`dihal.geometry.proxies` imports them, so they are registered
wherever proxies are evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PROXIES", "Proxy", "register_proxy"]


@dataclass(frozen=True)
class Proxy:
    """A registered geometry proxy and its documented convention."""

    name: str
    higher_is_better: bool
    description: str
    fn: Callable[[Any], dict[str, float]]


PROXIES: dict[str, Proxy] = {}


def register_proxy(name: str, *, higher_is_better: bool, description: str):
    """Decorator registering ``fn(ctx) -> {name: value, **auxiliaries}``.

    A duplicate name is an error rather than an override: two definitions of
    "kappa" silently replacing each other would make recorded runs
    ambiguous about which one produced their numbers.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"proxy name must be a non-empty string, got {name!r}")
    if name in PROXIES:
        raise ValueError(f"a proxy named {name!r} is already registered")

    def decorate(fn: Callable[[Any], dict[str, float]]):
        if name in PROXIES:  # registered between decorator creation and application
            raise ValueError(f"a proxy named {name!r} is already registered")
        PROXIES[name] = Proxy(name=name, higher_is_better=bool(higher_is_better), description=description, fn=fn)
        return fn

    return decorate
