"""What besides the spec can change a stage's result, folded into its identity or its DVC deps.

A stage name says "these outputs came from these inputs". The spec fields are only part of that;
the rest is made explicit here, by one of two means:

- **in the stage's hash** (a new name and output directory, so old outputs are never reported
  under new inputs): the *code* the stage runs, and the *model* where it is not a local file —
  the embedded package's version and GGUF sha256, a hub model's revision and the commit it
  resolves to in the local HF cache;
- **as DVC deps** (same name, `dvc status` says "changed deps" and `dvc repro` re-runs it and
  everything downstream): data files (`source: text` paths, a local `save_to_disk` dataset
  directory) and a `local` model directory's config, tokenizer and weight files. DVC hashes
  their content, so an edit in place is seen without dihal reading a byte at compile time.

The code rule: a stage kind's code hash is the sha256 of the source of every dihal module its
stage module (`dihal/stages/<kind>.py`) imports, directly or transitively, found statically with
`ast` (imports inside functions count, so do string literals naming a dihal module in a file that
calls `importlib.import_module` — the lazy PEP 562 re-exports — and the `__init__.py` of every package on the way),
plus `dihal/stages/__init__.py` (the dispatcher, which sets deterministic algorithms). The
top-level `dihal/__init__.py` (the version string only) is left out, so a release bump moves
nothing. Editing a proxy re-runs score and everything downstream but not extract; editing the CLI,
the ledger or the report moves no stage at all.

Plugins (`dihal.spec.plugins`): a stage that uses a proxy, space or interface an installed package
declares has that plugin's distribution, version and source hash in its identity (`plugin_identity`),
so upgrading or editing the plugin renames the stage, and `dihal stage` refuses a config compiled for
other plugin code, as it does for dihal's own.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import platformdirs

import dihal
from dihal.spec import plugins
from dihal.spec.geometry import STANDARD
from dihal.spec.inputs import is_model_file
from dihal.spec.kinds import STAGE_MODULES
from dihal.utils.atomic import write_atomic

PACKAGE_DIR = Path(dihal.__file__).resolve().parent
_MODULE_NAME = re.compile(r"dihal(\.[a-z_][a-z0-9_]*)+")


def _module_file(pkg_dir: Path, module: str) -> Path | None:
    parts = module.split(".")[1:]
    base = pkg_dir.joinpath(*parts) if parts else pkg_dir
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, module: str, is_pkg: bool) -> set[str]:
    return _source(path, path.stat().st_mtime_ns, path.stat().st_size, module, is_pkg)[1]


def _file_sha(path: Path, module: str) -> bytes:
    return _source(path, path.stat().st_mtime_ns, path.stat().st_size, module, path.name == "__init__.py")[0]


@lru_cache(maxsize=1024)
def _source(path: Path, mtime_ns: int, size: int, module: str, is_pkg: bool) -> tuple[bytes, frozenset[str]]:
    """(sha256, dihal modules named in any import) of one source file, cached by its stat: a file edited
    while a process runs is read again, so a long-lived process never hashes stale code. The imports are
    also kept on disk by the file's sha256 (`_ImportCache`): parsing every module of a closure was a tenth
    of a warm `dihal run`, and of every stage's start."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).digest()
    key = f"{sha.hex()} {module} {int(is_pkg)}"
    known = _IMPORTS.get(key)
    if known is not None:
        return sha, frozenset(known)
    found = _parse_imports(data, module, is_pkg)
    _IMPORTS.put(key, found)
    return sha, found


def _parse_imports(data: bytes, module: str, is_pkg: bool) -> frozenset[str]:
    found: set[str] = set()
    literals: set[str] = set()  # module names in strings count only where the file calls import_module
    lazy = False
    package = module if is_pkg else module.rpartition(".")[0]
    top = module.split(".")[0]
    for node in ast.walk(ast.parse(data)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            lazy = True
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            literals.add(node.value)  # a lazy `importlib.import_module("dihal.…")` (PEP 562 re-exports)
    found |= literals if lazy else set()
    return frozenset(m for m in found if m == top or m.startswith(f"{top}."))


class _ImportCache:
    """What `_parse_imports` found per (source sha256, module), in one JSON file under the user's cache folder.

    Keyed by content, so an entry can never describe other code; the file's name carries RULES, to be bumped
    whenever `_parse_imports` changes what it finds. An unreadable or unwritable cache is no cache."""

    RULES = 1

    def __init__(self) -> None:
        self.path = Path(platformdirs.user_cache_dir("dihal")) / f"imports-v{self.RULES}.json"
        self.entries: dict[str, list[str]] | None = None
        self.new: dict[str, list[str]] = {}

    def get(self, key: str) -> list[str] | None:
        if self.entries is None:
            try:
                loaded = json.loads(self.path.read_text())
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        found = self.entries.get(key)
        return found if isinstance(found, list) and all(isinstance(m, str) for m in found) else None

    def put(self, key: str, found: frozenset[str]) -> None:
        self.new[key] = sorted(found)

    def save(self) -> None:
        if not self.new:
            return
        merged = {**(self.entries or {}), **self.new}
        if len(merged) > 4096:  # old code's entries: keep the newest
            merged = dict(list(merged.items())[-4096:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(merged))
        except OSError:
            return
        self.entries, self.new = merged, {}


_IMPORTS = _ImportCache()


def closure(pkg_dir: Path, seed: str) -> dict[str, Path]:
    """Module name -> source file of `seed` and every module of its top-level package (dihal, or a plugin's,
    found in `pkg_dir`) it imports, transitively (with their packages)."""
    todo, seen = [seed], {}
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = _module_file(pkg_dir, mod)
        if path is None:  # a name imported from a module, not a module
            continue
        seen[mod] = path
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # parent packages' __init__
        if mod != "dihal.stages":  # the dispatcher imports every stage lazily; its own bytes count, not those
            todo += _imports(path, mod, path.name == "__init__.py")
    seen.pop("dihal", None)  # the version string only
    return seen


def code_hash(kind: str, pkg_dir: Path | None = None) -> str:
    """The hash of the dihal source a `kind` stage runs (see the module docstring for the rule)."""
    pkg_dir = (pkg_dir or PACKAGE_DIR).resolve()
    files = closure(pkg_dir, f"dihal.stages.{STAGE_MODULES[kind]}")
    _IMPORTS.save()
    files["dihal.stages"] = pkg_dir / "stages" / "__init__.py"
    h = hashlib.sha256()
    for mod in sorted(files):
        h.update(f"{mod}\0".encode() + _file_sha(files[mod], mod))
    return h.hexdigest()[:16]


def plugin_identity(uses: dict[str, Iterable[str]]) -> list[dict]:
    """What names the plugin code a stage runs, for the names in `uses` ({kind: names}) an installed plugin
    declares (built-in names are covered by the code hash): its entry point, distribution and version, and
    the sha256 of its entry point's module and every module of its package that module imports (the rule
    dihal's own code hash follows). Nothing is imported: the files are found with `importlib.util.find_spec`
    on the top-level package, which does not run it."""
    out = []
    for kind in sorted(uses):
        for name in sorted(set(uses[kind])):
            plugin = plugins.find(kind, name)
            if plugin is not None:
                out.append(
                    {
                        "entry_point": f"{plugin.group}:{name}",
                        "distribution": plugin.distribution,
                        "version": plugin.version,
                        "source": plugin_source_hash(plugin),
                    }
                )
    return out


def plugin_uses(kind: str, params: dict) -> dict[str, list[str]]:
    """The plugin-providable names a `kind` stage's params use: proxies and spaces (score), an interface (train)."""
    if kind == "score":
        geo = params["geometry"]
        return {"proxy": [*STANDARD, *geo["proxies"]], "space": list(geo["spaces"])}
    if kind == "train" and "interface" in params:
        return {"interface": [params["interface"]["name"]]}
    return {}


def plugin_source_hash(plugin: plugins.Plugin) -> str:
    top = plugin.module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise plugins.PluginError(f"{plugin.where}: its package {top!r} is not importable from this Python's path")
    if spec.submodule_search_locations:  # a package: the module and what it imports from the package
        files = closure(Path(next(iter(spec.submodule_search_locations))), plugin.module)
        if plugin.module not in files:
            raise plugins.PluginError(f"{plugin.where}: module {plugin.module!r} has no source file")
    else:  # a single-module distribution
        files = {top: Path(spec.origin)}
    h = hashlib.sha256()
    for mod in sorted(files):
        h.update(f"{mod}\0".encode() + _file_sha(files[mod], mod))
    return h.hexdigest()[:16]


def model_identity(backbone: dict) -> dict:
    """What names the model's weights beyond the spec, for stages that load it (local: see `model_deps`).
    Memoised per backbone: a plan builds several stages that load the same model."""
    return dict(_model_identity(json.dumps(backbone, sort_keys=True)))


@lru_cache(maxsize=32)
def _model_identity(key: str) -> tuple:
    return tuple(_resolve_model(json.loads(key)).items())


def _resolve_model(backbone: dict) -> dict:
    if backbone["source"] == "embedded":
        from dihal.backbone.depth import GGUF_PACKAGE, embedded_gguf, embedded_gguf_sha256

        return {
            "package": f"{GGUF_PACKAGE.replace('_', '-')}=={metadata.version(GGUF_PACKAGE.replace('_', '-'))}",
            "gguf_sha256": embedded_gguf_sha256(embedded_gguf()),
        }
    if backbone["source"] == "hf":
        return {"revision": backbone.get("revision"), "commit": hub_commit(backbone["id"], backbone.get("revision"))}
    return {}


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub revision names, from the local HF cache only (never the network); None if unknown."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
        return ref.read_text().strip() if ref.is_file() else None
    except (ImportError, OSError):
        return None


def revision_warning(backbone: dict, model: dict) -> str | None:
    """A line for the user when a hub backbone is not pinned (it may change under the same spec)."""
    if backbone["source"] != "hf" or backbone.get("revision"):
        return None
    if model.get("commit"):
        got = f"stages are keyed to main = {model['commit']} in the local HF cache and re-run when it moves"
    else:
        got = "it is not in the local HF cache, so nothing pins the weights the stages load"
    return f"warning: backbone {backbone['id']!r} names no revision ({got}); pin it with backbone.revision: <commit>"


def model_deps(backbone: dict, root: Path) -> list[str]:
    """A `local` model directory's config, tokenizer and weight files, as DVC deps (DVC hashes them)."""
    if backbone["source"] != "local" or not backbone.get("id"):
        return []
    d = Path(backbone["id"])
    full = d if d.is_absolute() else root / d
    if not full.is_dir():
        return []
    names = sorted(p.name for p in full.iterdir() if p.is_file() and is_model_file(p.name))
    return [(d / n).as_posix() for n in names]


def data_deps(data: dict, root: Path) -> list[str]:
    """The files a stage's documents come from: `text` paths, or a local `hf` dataset directory."""
    if data["source"] == "text":
        return list(data.get("paths") or ())
    ds = data.get("dataset")
    if data["source"] == "hf" and ds and (Path(ds) if Path(ds).is_absolute() else root / ds).is_dir():
        return [ds]
    return []


def warn(line: str | None) -> None:
    if line:
        print(line, file=sys.stderr, flush=True)
