"""The local files a spec reads, named by what they hold: why one spec has one hash wherever dihal starts.

Relative paths are rewritten at load time to be relative to the project root (`dihal.spec.paths`), so the
same spec validated from its own folder and run with `-C proj` carries two different path strings. The spec
hash therefore never hashes a local path: each one -- `data.paths` files, a local `data.dataset` directory,
a `local` backbone's model files, the same fields in sensitivity variants -- is hashed as the sha256 of its
content. The hash then names the bytes a run reads: an edited corpus gets a new hash, a copied or moved
project keeps its hashes, and the working directory never counts. Stage identities keep the path (DVC
hashes the content as a dep, `dihal.stages.identity`), so none of this renames a stage.

The digests are recorded with the spec (`inputs` in its canonical JSON), so `dihal ledger rebuild` can
check a recorded hash after the files have moved or changed. Reading is cached per (file, size, mtime) in
the process: a multi-GB model directory is read once per command.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from dihal.spec.errors import SpecError
from dihal.spec.schema import Spec
from dihal.utils.digest import file_sha256

# A local model directory's files that decide its outputs (DVC deps too, `dihal.stages.identity.model_deps`).
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def is_model_file(name: str) -> bool:
    return name in MODEL_FILES or name.endswith(WEIGHT_SUFFIXES)


def local_paths(spec: Spec, root: Path | str | None = None) -> list[tuple[str, str, str]]:
    """(field, path, kind) for each local input the spec names; kind is 'file', 'dataset' or 'model'.

    A `data.dataset` is local when that directory exists under `root` (the rule `dihal.spec.paths` and
    the DVC deps use); without `root` only the paths that are local whatever the disk holds are listed.
    """
    out: list[tuple[str, str, str]] = []

    def data(prefix: str, d: dict, source: str) -> None:
        if source == "text":
            out.extend((f"{prefix}.paths[{i}]", p, "file") for i, p in enumerate(d.get("paths") or ()))
        ds = d.get("dataset")
        if source == "hf" and ds and root is not None and _at(ds, root).is_dir():
            out.append((f"{prefix}.dataset", ds, "dataset"))

    data("data", {"paths": spec.data.paths, "dataset": spec.data.dataset}, spec.data.source)
    if spec.backbone.source == "local" and spec.backbone.id:
        out.append(("backbone.id", spec.backbone.id, "model"))
    for i, v in enumerate(spec.sensitivity):
        if v.data:
            data(f"sensitivity[{i}].data", v.data, v.data.get("source", spec.data.source))
    return out


def _at(path: str, root: Path | str) -> Path:
    return Path(path) if os.path.isabs(path) else Path(root) / path


@lru_cache(maxsize=4096)
def _cached_sha(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _sha(path: Path) -> str:
    st = path.stat()
    return _cached_sha(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _tree(files: list[tuple[str, Path]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(files):
        h.update(f"{name}\0{_sha(p)}\n".encode())
    return h.hexdigest()


def content_digest(path: Path, kind: str) -> str:
    """'sha256:<hex>' of a file; of a directory, the sha256 over its files' relative names and digests."""
    if kind == "file":
        return f"sha256:{_sha(path)}"
    if kind == "model":
        files = [(p.name, p) for p in path.iterdir() if p.is_file() and is_model_file(p.name)]
    else:
        files = [(p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file()]
    return f"sha256-tree:{_tree(files)}"


def input_digests(spec: Spec, root: Path | str) -> dict[str, str]:
    """Path (as the spec names it, relative to `root`) -> content digest, for every local input."""
    out: dict[str, str] = {}
    for field, path, kind in local_paths(spec, root):
        full = _at(path, root)
        try:
            out[path] = content_digest(full, kind)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise SpecError(
                str(path), [(field, path, f"a readable {'file' if kind == 'file' else 'directory'} ({reason})")]
            ) from None
    return out
