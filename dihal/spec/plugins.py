"""Extensions from other installed packages, found through Python entry points.

A stage runs in its own process (`dvc repro` calls `dihal stage <config>`), so a proxy registered in the
user's own process never reaches it. A separately installed package can instead declare what it adds in its
`pyproject.toml`, and every dihal process -- `dihal validate`, the compiler, each stage -- finds it the same way:

    [project.entry-points."dihal.proxies"]
    mine = "dihal_mine.proxy"          # importing it registers the proxy "mine" (register_proxy)

One group per kind of extension (`GROUPS`). The entry point's **name** is the name a spec uses (a proxy, a
space, an interface) or the config's `model_type` (a backbone family). That name is the plugin's torch-free
metadata: it is read from the installed distribution's metadata without importing the plugin, so
`dihal validate` accepts a plugin's names (and refuses unknown ones with a did-you-mean) while still importing
no torch. The entry point's **value** is imported only where the registry is consulted for that name: for
proxies and spaces, importing it must register the name (`register_proxy` / `register_space`); for interfaces
it names the `Interface` subclass, for families the `Family` subclass.

A plugin that fails to import is reported as a `PluginError` naming the distribution and the entry point,
not as a traceback from inside the plugin. Built-in names take precedence, so a spec naming a built-in that a
plugin also declares is refused as ambiguous (`shadowed`). Two distributions declaring one name are refused
when the name is used. How a plugin enters a stage's identity is `dihal.stages.identity.plugin_identity`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata

# kind -> entry point group
GROUPS: dict[str, str] = {
    "proxy": "dihal.proxies",
    "space": "dihal.spaces",
    "interface": "dihal.interfaces",
    "family": "dihal.families",
}
LABELS: dict[str, str] = {"proxy": "proxy", "space": "geometry space", "interface": "interface", "family": "family"}


class PluginError(ValueError):
    """A plugin that cannot be used: it failed to import, or it does not provide what its entry point promises."""


@dataclass(frozen=True)
class Plugin:
    """One entry point in one of dihal's groups, as its distribution's metadata declares it (nothing imported)."""

    kind: str
    name: str
    value: str  # "module" or "module:attribute"
    distribution: str
    version: str

    @property
    def group(self) -> str:
        return GROUPS[self.kind]

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    @property
    def where(self) -> str:
        """How an error names it: the entry point, its group and the distribution that declares it."""
        return (
            f"entry point {self.name!r} = {self.value!r} (group {self.group}) "
            f"of distribution {self.distribution} {self.version}"
        )


@cache
def _dihal_entry_points() -> tuple:
    """Every installed entry point in dihal's groups: one pass over the installed distributions per process
    (a pass costs ~15 ms; validate asks about three groups)."""
    every = metadata.entry_points()  # all groups from one pass; `.select` is the API on 3.11 and later alike
    return tuple(ep for group in GROUPS.values() for ep in every.select(group=group))


@cache
def _scan(kind: str) -> tuple[dict[str, Plugin], dict[str, tuple[str, ...]]]:
    """(name -> plugin, name -> distributions when several declare it); read once per process."""
    found: dict[str, list[Plugin]] = {}
    for ep in (e for e in _dihal_entry_points() if e.group == GROUPS[kind]):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
        version = dist.version if dist is not None else "?"
        found.setdefault(ep.name, []).append(Plugin(kind, ep.name, ep.value, dist_name, version))
    unique = {name: ps[0] for name, ps in found.items() if len(ps) == 1}
    clashes = {name: tuple(sorted(p.distribution for p in ps)) for name, ps in found.items() if len(ps) > 1}
    return unique, clashes


def refresh() -> None:
    """Forget what was found (after installing a plugin into a running process's path)."""
    _dihal_entry_points.cache_clear()
    _scan.cache_clear()


def available(kind: str) -> dict[str, Plugin]:
    """Every usable plugin of `kind` by name (names declared by two distributions are left out: see `find`)."""
    return dict(_scan(kind)[0])


def names(kind: str) -> set[str]:
    """The names plugins of `kind` declare, ambiguous ones included (validate lists them as known)."""
    unique, clashes = _scan(kind)
    return set(unique) | set(clashes)


def find(kind: str, name: str) -> Plugin | None:
    """The plugin declaring `name`, None if none does; a name two distributions declare is a PluginError."""
    unique, clashes = _scan(kind)
    if name in clashes:
        raise PluginError(
            f"{GROUPS[kind]} entry point {name!r} is declared by several distributions "
            f"({', '.join(clashes[name])}): uninstall all but one"
        )
    return unique.get(name)


def load(plugin: Plugin) -> object:
    """Import the entry point's value; any failure becomes one PluginError naming the distribution and entry point."""
    module, _, attr = plugin.value.partition(":")
    try:
        obj = importlib.import_module(module.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
    except Exception as err:  # a plugin's import can fail in any way; the user needs to know which plugin
        raise PluginError(f"{plugin.where} failed to load: {type(err).__name__}: {err}") from None
    return obj


def ensure_registered(kind: str, name: str, registry: Mapping, register: str) -> None:
    """Make `name` a key of `registry` (a registry whose plugins register themselves on import: proxies,
    spaces), importing the plugin that declares it when it is not one yet. `register` is the decorator the
    plugin should have called, named in the error when importing it registered nothing.

    Raises ValueError (with a did-you-mean) for a name nothing provides, and PluginError naming the
    distribution and entry point for a plugin that fails to import or does not register its name."""
    if name in registry:
        return
    plugin = find(kind, name)
    if plugin is None:
        raise ValueError(unknown(kind, name, set(registry) | names(kind)))
    load(plugin)
    if name not in registry:
        raise PluginError(
            f"{plugin.where} was imported but registered no {LABELS[kind]} named {name!r}: decorate its "
            f"function with {register}({name!r}, ...)"
        )


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """The message for a name nothing provides: the closest match, every known name, and where plugins come from."""
    known = sorted(set(known))
    return (
        f"unknown {LABELS[kind]} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)} "
        f"(built in, or declared by an installed package in the entry point group {GROUPS[kind]})"
    )


def shadowed(kind: str, requested: Iterable[str], builtin: Iterable[str]) -> str | None:
    """A message when a requested built-in name is also a plugin's entry point (which one would run is unclear)."""
    plugins = names(kind)
    both = sorted(set(requested) & set(builtin) & plugins)
    if not both:
        return None
    return (
        f"{both[0]!r} is built in and also declared by an installed plugin ({GROUPS[kind]}); "
        "the built-in would run: rename the plugin's entry point"
    )
