"""Which architectures dihal can split, decided from a config alone (no torch, no weights).

`dihal validate` reads a model's config.json and must refuse what a stage would fail on, before anything
is written: a `model_type` with a family module is split exactly by that module (an explicit block loop);
any other decoder-only causal LM (a *ForCausalLM architecture) gets `GENERIC`, hooks on its own forward
(`families/generic.py`, slower); encoder-only and encoder-decoder models can never be split into
"blocks below ℓ, blocks above ℓ, LM head".

Adding a family: one module under `dihal/backbone/families/` and one line in FAMILIES, or, from another
package, an entry point in the group `dihal.families` whose name is the `model_type` (`PLUGIN`; built-in
types take precedence).
"""

from __future__ import annotations

from dihal.spec import plugins

# model_type -> family module under dihal.backbone.families
FAMILIES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "llama",
    "qwen3": "llama",
    "smollm3": "llama",
    "gpt2": "gpt2",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3_text": "gemma",
    "gpt_neox": "gpt_neox",
    "phi3": "phi3",
    "phi": "phi",
    "olmo2": "olmo2",
    "olmo": "olmo2",
}


GENERIC = "generic"  # check_config's answer for a decoder-only causal LM without a family module
PLUGIN = "plugin"  # check_config's answer for a model_type an installed plugin's Family handles


class UnsupportedArchitecture(ValueError):
    """A loaded model whose architecture no family and no generic hook path can run."""


class NotSupported(ValueError):
    """The config names an architecture dihal cannot split; the message says why and what is supported."""


def supported_types() -> list[str]:
    return sorted(set(FAMILIES) | plugins.names("family"))


def check_config(config: dict) -> str:
    """The family module for a model config (GENERIC for a causal LM of no known family), or NotSupported
    saying why not."""
    what = f"decoder-only causal LMs (*ForCausalLM; fast path for {', '.join(supported_types())})"
    model_type = str(config.get("model_type") or "")
    archs = [str(a) for a in config.get("architectures") or []]
    if config.get("is_encoder_decoder"):
        raise NotSupported(f"{model_type!r} ({', '.join(archs)}) is an encoder-decoder model; dihal splits {what}")
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise NotSupported(
            f"{model_type!r} ({', '.join(archs)}) is not a causal LM (no *ForCausalLM head); dihal splits {what}"
        )
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if plugins.find("family", model_type) is not None:
        return PLUGIN
    if archs:  # a decoder-only causal LM of no known family: hooks on its own forward (families/generic.py)
        return GENERIC
    raise NotSupported(
        f"architecture {model_type!r} is not supported (its config names no *ForCausalLM "
        f"architecture); dihal splits {what}"
    )


def generic_notice(config: dict) -> str:
    """The one line said when a model is split by the generic path."""
    return (
        f"architecture {config.get('model_type')!r} has no dihal family module: it is split by hooks on its "
        "own forward (generic path; correct but slower, the fast block loop is not available)"
    )
