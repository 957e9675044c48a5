"""The backbone's shape, read without weights, and its parameter counts by formula.

Where the config comes from, first that answers: a `local` directory's config.json; a `hf` model's
config.json in the local HF cache (as `dihal validate` reads it, no network); the embedded model's
converted config.json in the dihal cache, else its GGUF header; else the built-in table below
(public numbers from each model's config.json on the Hugging Face hub). The source is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dihal.spec.schema import BackboneSpec

# Public config.json values (huggingface.co/<id>/blob/main/config.json).
KNOWN: dict[str, dict] = {
    "meta-llama/Llama-3.1-8B": dict(
        model_type="llama",
        hidden_size=4096,
        num_hidden_layers=32,
        intermediate_size=14336,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "Qwen/Qwen3-8B": dict(
        model_type="qwen3",
        hidden_size=4096,
        num_hidden_layers=36,
        intermediate_size=12288,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=False,
    ),
    "HuggingFaceTB/SmolLM2-135M": dict(
        model_type="llama",
        hidden_size=576,
        num_hidden_layers=30,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
}
KNOWN["meta-llama/Llama-3.1-8B-Instruct"] = KNOWN["meta-llama/Meta-Llama-3.1-8B"] = KNOWN["meta-llama/Llama-3.1-8B"]
KNOWN["HuggingFaceTB/SmolLM2-135M-Instruct"] = KNOWN["HuggingFaceTB/SmolLM2-135M"]

UNGATED = {"gpt2", "gpt_neox", "phi", "gpt_bigcode"}  # two-matrix MLPs; every other family here has a gated MLP
BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}


class CostError(ValueError):
    """The plan cannot be costed (no config for the backbone); the message says what to do."""


@dataclass(frozen=True)
class Shape:
    d: int
    layers: int
    inter: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool
    source: str  # where the config was read

    @property
    def block_params(self) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        attn = self.d * q + 2 * self.d * kv + q * self.d
        mlp = (3 if self.gated else 2) * self.d * self.inter
        return attn + mlp + 2 * self.d  # two norms; biases ignored

    @property
    def embed_params(self) -> int:
        return self.vocab * self.d

    @property
    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.d

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.embed_params + self.head_params + self.d

    def forward_flops(self, tokens: float, first: int, last: int, seq: int, *, head: bool = False) -> float:
        """2·params·tokens for blocks first..last (1-based, inclusive) plus causal attention
        (QKᵀ and AV: 2·seq·heads·head_dim per token and block, the causal half), plus the LM head."""
        n = max(0, last - first + 1)
        per_token = n * (2 * self.block_params + 2 * seq * self.heads * self.head_dim)
        if head:
            per_token += 2 * self.vocab * self.d
        return float(tokens) * per_token

    def as_dict(self) -> dict:
        return {
            "hidden_size": self.d,
            "layers": self.layers,
            "intermediate_size": self.inter,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab": self.vocab,
            "tied_embeddings": self.tied,
            "params": self.params,
            "config_source": self.source,
        }


def shape_of(config: dict, source: str) -> Shape:
    g = config.get
    if isinstance(g("text_config"), dict):  # multimodal wrappers nest the LM's config
        return shape_of({**config["text_config"], "model_type": config["text_config"].get("model_type")}, source)
    d = g("hidden_size") or g("n_embd") or g("d_model")
    layers = g("num_hidden_layers") or g("n_layer")
    heads = g("num_attention_heads") or g("n_head")
    if not (d and layers and heads):
        raise CostError(f"the backbone config ({source}) gives no hidden size, layer count or head count")
    return Shape(
        d=int(d),
        layers=int(layers),
        inter=int(g("intermediate_size") or g("n_inner") or 4 * d),
        heads=int(heads),
        kv_heads=int(g("num_key_value_heads") or heads),
        head_dim=int(g("head_dim") or d // heads),
        vocab=int(g("vocab_size") or 0),
        tied=bool(g("tie_word_embeddings", g("model_type") in UNGATED)),
        gated=str(g("model_type")) not in UNGATED,
        source=source,
    )


def backbone_shape(spec: BackboneSpec) -> Shape:
    """The shape of `spec`'s model (relative ids already resolved against the project root)."""
    from dihal.backbone.depth import cached_hub_config, read_config

    if spec.source == "local":
        path = Path(spec.id) / "config.json"
        if path.is_file():
            return shape_of(read_config(path), f"local config.json ({path})")
    elif spec.source == "hf":
        config = cached_hub_config(spec)
        if config is not None:
            return shape_of(config, f"HF cache config.json ({spec.id})")
    else:
        found = _embedded_config()
        if found is not None:
            return shape_of(*found)
    key = spec.id or "HuggingFaceTB/SmolLM2-135M"
    if key in KNOWN:
        why = "not in the local HF cache" if spec.source == "hf" else "its config could not be read"
        return shape_of(KNOWN[key], f"built-in table ({key}; {why})")
    raise CostError(
        f"no config for backbone {spec.id or spec.source!r}: it is not in the local HF cache and not "
        f"in the built-in table ({', '.join(sorted(KNOWN))}); download its config.json "
        f"(`huggingface-cli download {spec.id} config.json`) or use source: local"
    )


def _embedded_config() -> tuple[dict, str] | None:
    """The converted embedded model's config.json (`dihal.backbone.loading.embedded_dir`'s target), else the
    GGUF header's llama.* fields; None when neither can be read."""
    from dihal.backbone.depth import BackboneError, converted_dir, embedded_gguf, read_config

    try:
        gguf = embedded_gguf()
        target = converted_dir(gguf) / "config.json"
        if target.is_file():
            return read_config(target), f"embedded: converted config.json ({target})"
        return _gguf_config(gguf), f"embedded: GGUF header ({gguf.name})"
    except (BackboneError, OSError, ImportError, ValueError, KeyError):
        return None


def _gguf_config(gguf: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    fields = reader.fields

    def val(suffix: str):
        f = next(f for k, f in fields.items() if k.endswith(suffix))
        return int(f.parts[f.data[0]][0])

    tokens = next(f for k, f in fields.items() if k == "tokenizer.ggml.tokens")
    heads = val(".attention.head_count")
    return {
        "model_type": "llama",
        "hidden_size": val(".embedding_length"),
        "num_hidden_layers": val(".block_count"),
        "intermediate_size": val(".feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": val(".attention.head_count_kv"),
        "vocab_size": len(tokens.data),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }
