"""Checks that need more than the schema — files, backbone depth and architecture — still before any compute.

They read configs and file listings only (no weights), and report problems in the
same form as schema errors: field path, bad value, what was expected.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
from pathlib import Path

from dihal.spec.schema import Spec, SpecError


def check_resources(
    spec: Spec, source: str = "<spec>", root: Path | str = ".", notes: list[str] | None = None
) -> int | None:
    """Raise SpecError listing every problem; return the backbone depth when it could be read.

    `spec` has gone through `dihal.spec.paths.resolve_paths`, so its relative paths are relative to `root`.
    Things worth saying that are not problems (a backbone split by the generic path) go to `notes`."""
    from dihal.backbone import support
    from dihal.backbone.depth import BackboneError, backbone_config, backbone_depth
    from dihal.spec.paths import at_root

    root = Path(root)
    problems: list[tuple[str, object, str]] = []
    for i, p in enumerate(spec.data.paths):
        if (bad := _not_a_corpus_file(root / p)) is not None:
            problems.append((f"data.paths[{i}]", p, bad))
        elif (bad := _not_utf8(root / p)) is not None:
            problems.append((f"data.paths[{i}]", p, f"a UTF-8 text file ({bad}; re-save it as UTF-8)"))
    if spec.data.source == "text" and not problems:
        problems += _corpus_too_small(spec, [root / p for p in spec.data.paths])
    if spec.backbone.source == "local" and not (root / spec.backbone.id).is_dir():
        problems.append(("backbone.id", spec.backbone.id, "an existing local model directory"))
    if spec.data.source == "hf" and spec.data.dataset and spec.data.dataset.startswith((".", "/")):
        if not (root / spec.data.dataset).is_dir():
            problems.append(("data.dataset", spec.data.dataset, "an existing dataset directory (save_to_disk)"))
    depth = None
    if not problems:
        backbone = at_root(spec.backbone, root)
        try:
            depth = backbone_depth(backbone)
            # None: a hub model not in the local cache; a config naming no architecture: both checked at load time
            config = backbone_config(backbone)
            if config and (config.get("model_type") or config.get("architectures")):
                if support.check_config(config) == support.GENERIC and notes is not None:
                    notes.append(support.generic_notice(config))
        except (BackboneError, support.NotSupported) as err:
            problems.append(("backbone", spec.backbone.id or spec.backbone.source, str(err)))
    if spec.backbone.source == "local" and (root / spec.backbone.id).is_dir():
        if not any(any((root / spec.backbone.id).glob(g)) for g in WEIGHT_FILES):
            problems.append(
                (
                    "backbone.id",
                    spec.backbone.id,
                    f"a model directory with weights ({', '.join(WEIGHT_FILES)}); this one has none",
                )
            )
    if not problems:
        problems += _block_start_problems(spec, root)
    if depth is not None:
        for i, layer in enumerate(spec.geometry.layers or ()):
            if layer > depth:
                problems.append(
                    (f"geometry.layers[{i}]", layer, f"a layer in 1..{depth} (the backbone has {depth} blocks)")
                )
        if spec.select.layer is not None and spec.select.layer > depth:
            problems.append(("select.layer", spec.select.layer, f"a layer in 1..{depth}"))
    if spec.bridge is not None and spec.bridge.layers != "selected":
        # Candidates are the listed layers, else 1..L-1; with an unknown depth only a listed set can be checked.
        cands = set(spec.geometry.layers) if spec.geometry.layers else set(range(1, depth)) if depth else None
        for i, layer in enumerate(spec.bridge.layers):
            if depth is not None and layer > depth:
                problems.append(
                    (f"bridge.layers[{i}]", layer, f"a layer in 1..{depth} (the backbone has {depth} blocks)")
                )
            elif cands is not None and layer not in cands:
                problems.append(
                    (f"bridge.layers[{i}]", layer, "one of geometry.layers (each swept layer needs a score G)")
                )
        if spec.select.rule == "fixed" and cands is not None and spec.select.layer not in cands:
            problems.append(("select.layer", spec.select.layer, "one of geometry.layers"))
    if problems:
        raise SpecError(source, problems)
    return depth


# What transformers' from_pretrained reads weights from (sharded checkpoints have the same suffixes).
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def _tokenizer_file(spec: Spec, root: Path) -> Path | None:
    """The backbone's tokenizer.json when it is on disk already (a local model, the converted embedded one)."""
    from dihal.backbone.depth import BackboneError, converted_dir

    if spec.backbone.source == "local":
        path = root / spec.backbone.id / "tokenizer.json"
    elif spec.backbone.source == "embedded":
        try:
            path = converted_dir() / "tokenizer.json"
        except BackboneError:
            return None
    else:
        return None  # a hub model: its tokenizer is checked when extract loads it
    return path if path.is_file() else None


def _block_start_problems(spec: Spec, root: Path) -> list[tuple[str, object, str]]:
    """A `data.block_start` naming a token must name one vocabulary entry; read from tokenizer.json alone
    (no transformers import), where the tokenizer is on disk already. auto/bos/eos are resolved at extract."""
    named = [("data.block_start", spec.data.block_start)] + [
        (f"sensitivity[{i}].data.block_start", v.data["block_start"])
        for i, v in enumerate(spec.sensitivity)
        if isinstance(v.data.get("block_start"), str)
    ]
    named = [(f, t) for f, t in named if t not in ("auto", "bos", "eos")]
    path = _tokenizer_file(spec, root) if named else None
    if path is None:
        return []
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception:  # noqa: BLE001 - an unreadable tokenizer is reported where it is loaded
        return []
    return [
        (field, token, f"one token of the backbone's vocabulary ({path.name}), or auto, bos or eos")
        for field, token in named
        if tok.token_to_id(token) is None
    ]


def _not_a_corpus_file(path: Path) -> str | None:
    """Why `path` cannot be a corpus file, or None. Checked without following a symlink loop or opening a FIFO
    (either would hang or raise far from the spec)."""
    where = f"relative paths are read from the spec file's folder; looked for {os.path.abspath(path)}"
    try:
        st = path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"a text file, not a symlink loop ({where})"
        return f"an existing text file ({where})"
    if stat.S_ISDIR(st.st_mode):
        return f"a text file, not a directory ({where})"
    if not stat.S_ISREG(st.st_mode):
        return f"a regular text file, not a FIFO, socket or device ({where})"
    if st.st_size == 0:
        return "a text file with something in it (this one is empty)"
    return None


def _corpus_too_small(spec: Spec, paths: list[Path]) -> list[tuple[str, object, str]]:
    """Sizes the corpus cannot reach even at one token per byte (tokenizers average 3-5 bytes a token), so
    these are never false alarms; anything tighter is found exactly when extract tokenizes the corpus."""
    total = sum(p.stat().st_size for p in paths)
    problems: list[tuple[str, object, str]] = []
    need = [("geometry.n_tokens", spec.geometry.n_tokens, spec.geometry.n_tokens)]  # field, value, tokens
    if spec.bridge is not None:
        need.append(("bridge.n_train", spec.bridge.n_train, spec.bridge.n_train * (spec.bridge.seq_len - 1)))
    for field, value, tokens in need:
        if tokens > total:
            problems.append(
                (
                    field,
                    value,
                    f"a sample the corpus can hold: it needs {tokens:,} tokens and data.paths hold {total:,} bytes "
                    "(at most that many tokens); add text or lower the field",
                )
            )
    return problems


def _not_utf8(path: Path, chunk: int = 1 << 22) -> str | None:
    """Where a text file stops being UTF-8 (or looks binary), read in chunks: a corpus may be large,
    and extract would otherwise fail on it minutes into a run."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, offset = 0, 0  # newlines and bytes before the current chunk
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            nul = data.find(b"\x00")
            if nul >= 0:
                return f"a NUL byte at offset {offset + nul}: this looks like a binary file"
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                buf = err.object  # the chunk, after any bytes held back from the previous one
                at = offset - (len(buf) - len(data)) + err.start
                line = lines + 1 + buf[: err.start].count(b"\n")
                return f"byte 0x{buf[err.start : err.start + 1].hex()} at line {line} (offset {at}) is not UTF-8"
            if not data:
                return None
            lines += data.count(b"\n")
            offset += len(data)
