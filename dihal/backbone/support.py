"""Which architectures dihal can split, decided from a config alone (no torch, no weights).

`dihal validate` reads a model's config.json and must refuse what a stage would fail on, before anything
is written: a `model_type` with a family module is split exactly by that module (an explicit block loop);
any other decoder-only causal LM is refused here until a generic path exists for it; encoder-only and
encoder-decoder models can never be split into "blocks below ℓ, blocks above ℓ, LM head".

Adding a family: one module under `dihal/backbone/families/` and one line in FAMILIES.
"""

from __future__ import annotations

# model_type -> family module under dihal.backbone.families
FAMILIES: dict[str, str] = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "smollm3": "llama",
    "gpt2": "gpt2",
}  # fmt: skip


class NotSupported(ValueError):
    """The config names an architecture dihal cannot split; the message says why and what is supported."""


def supported_types() -> list[str]:
    return sorted(FAMILIES)


def check_config(config: dict) -> str:
    """The family module for a model config, or NotSupported saying why not."""
    model_type = str(config.get("model_type") or "")
    archs = [str(a) for a in config.get("architectures") or []]
    if config.get("is_encoder_decoder"):
        raise NotSupported(f"{model_type or archs} is an encoder-decoder model; dihal splits decoder-only causal LMs "
                           f"({', '.join(supported_types())})")  # fmt: skip
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise NotSupported(f"{', '.join(archs)} is not a causal LM (no *ForCausalLM head); dihal splits decoder-only "
                           f"causal LMs ({', '.join(supported_types())})")  # fmt: skip
    if model_type not in FAMILIES:
        raise NotSupported(f"architecture {model_type!r} is not supported; dihal knows how to split: "
                           f"{', '.join(supported_types())}")  # fmt: skip
    return FAMILIES[model_type]
