"""Sliding-window attention in the llama-style families: Mistral (every layer slides) and Qwen2/Qwen3
(layers marked `sliding_attention` in `layer_types`). A window shorter than the sequence makes a
plain causal mask wrong, so these checks fail unless each layer gets HF's mask."""

from __future__ import annotations

import pytest
import torch

from dihal.backbone.families import family_for
from tests.family_checks import check_hidden_states, check_splice, check_stops_early, ids

COMMON = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    initializer_range=0.1,
)


def make(kind: str):
    from transformers import (
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(0)
    if kind == "mistral":
        return MistralForCausalLM(MistralConfig(**COMMON, sliding_window=4, attn_implementation="eager")).eval()
    cfg_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen2" else (Qwen3Config, Qwen3ForCausalLM)
    cfg = cfg_cls(**COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=2, attn_implementation="eager")
    return model_cls(cfg).eval()


@pytest.mark.parametrize("kind", ["mistral", "qwen2", "qwen3"])
def test_sliding_window_families_are_exact(kind):
    model = make(kind)
    x = ids(length=14)
    check_hidden_states(model, x)
    check_splice(model, x)
    check_stops_early(model, x)


@pytest.mark.parametrize("kind", ["mistral", "qwen2"])
def test_a_full_causal_mask_would_be_wrong(kind, monkeypatch):
    model = make(kind)
    fam = type(family_for(model))
    monkeypatch.setattr(fam, "windows", lambda self: [None] * len(self.blocks))
    with pytest.raises(AssertionError):
        check_hidden_states(model, ids(length=14))
