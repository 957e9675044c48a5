"""The package layout stays a layered graph: no import circles, and no arrow from a lower layer up to a higher one.

Imports are read statically (every `import` and `from … import` anywhere in a module, inside functions and
`if TYPE_CHECKING:` blocks too), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from importlib import import_module
from pathlib import Path

import dihal

PKG = Path(dihal.__file__).parent
# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = [
    {"utils"},
    {"spec"},
    {"data", "backbone"},
    {"geometry", "bridge", "analysis", "interfaces"},
    {"stages"},
    {"compile"},
    {"ledger", "cost"},
    {"execute"},
    {"report"},
    {"cli", "api", "__main__"},
]
LAYER = {top: i for i, tops in enumerate(LAYERS) for top in tops}


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The dihal modules `name` imports; `from pkg import mod` counts as an arrow to pkg.mod, not to pkg."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            found |= subs if len(subs) == len(node.names) else subs | {base}
    out = set()
    for mod in found:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        if mod and mod != name and mod != "dihal":
            out.add(mod)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYER.get(top, -1)


def test_the_import_graph_has_no_circles():
    assert cycles(graph()) == []


def test_every_package_has_a_layer():
    tops = {m.split(".")[1] for m in modules() if "." in m}
    assert tops <= set(LAYER), sorted(tops - set(LAYER))


FACADE = {("dihal", "dihal.api")}  # `dihal.run`/`dihal.results`: the package's lazy (PEP 562) public face


def test_no_module_imports_a_higher_layer():
    upward = [(m, dep) for m, deps in graph().items() for dep in deps if layer_of(dep) > layer_of(m)]
    assert set(upward) <= FACADE, upward


def test_the_checker_sees_a_circle_and_an_upward_arrow():
    g = {"dihal.spec.a": {"dihal.ledger.b"}, "dihal.ledger.b": {"dihal.spec.a"}}
    assert cycles(g) == [["dihal.ledger.b", "dihal.spec.a"]]
    assert layer_of("dihal.ledger.b") > layer_of("dihal.spec.a")


def test_stage_kinds_have_one_table():
    from dihal.spec.kinds import KINDS, STAGE_MODULES
    from dihal.stages import RUNNERS, identity

    assert KINDS == (
        "extract",
        "score",
        "select",
        "targets",
        "train",
        "evaluate",
        "correlate",
        "reference",
        "frontier",
        "summary",
    )
    assert all((PKG / "stages" / f"{STAGE_MODULES[k]}.py").is_file() for k in KINDS)
    assert all(len(identity.code_hash(k)) == 16 for k in KINDS)
    assert tuple(RUNNERS) == KINDS, "dihal stage runs every kind, and only those"
    assert all(callable(getattr(import_module(f"dihal.stages.{STAGE_MODULES[k]}"), RUNNERS[k])) for k in KINDS)
