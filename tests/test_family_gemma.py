"""Gemma 1, 2 and 3 (text) split exactly (issue 11): the three family checks on tiny random models built so that
every Gemma quirk matters, and negative controls showing the checks fail when a quirk is dropped.

The tiny configs: hidden size 48 (sqrt(48) is not a power of two, so the scale's dtype matters in bf16),
sliding window 4 on 14-token sequences with sliding and global layers mixed, soft-capping at 5 with weights
large enough (initializer_range 0.2) that attention and final logits go well past the cap, Gemma 3's global
rotary scaled (linear, factor 4, theta 1e6) and its local one at theta 1e4, norm weights randomised.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
)

from dihal.backbone import BackboneAdapter
from dihal.backbone.families import gemma as gemma_family
from dihal.backbone.families.gemma import FULL, SLIDING, Gemma
from dihal.backbone.support import NotSupported, check_config
from tests.family_checks import check_hidden_states, check_splice, check_stops_early, ids

GENERATIONS = ["gemma", "gemma2", "gemma3_text"]
TYPES = [SLIDING, SLIDING, FULL, SLIDING, FULL]
COMMON = dict(
    vocab_size=256,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=len(TYPES),
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    initializer_range=0.2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
WINDOWED = dict(layer_types=TYPES, sliding_window=4, query_pre_attn_scalar=16, final_logit_softcapping=5.0)


def make(generation: str, attn: str = "eager", **overrides):
    torch.manual_seed(0)
    if generation == "gemma":
        model = GemmaForCausalLM(GemmaConfig(**COMMON, attn_implementation=attn, **overrides))
    elif generation == "gemma2":
        cfg = Gemma2Config(**COMMON, **WINDOWED, attn_logit_softcapping=5.0, attn_implementation=attn, **overrides)
        model = Gemma2ForCausalLM(cfg)
    else:
        rope = {
            FULL: {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
            SLIDING: {"rope_type": "default", "rope_theta": 1e4},
        }
        cfg = Gemma3TextConfig(**COMMON, **WINDOWED, rope_parameters=rope, attn_implementation=attn, **overrides)
        model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # Gemma norms scale by (1 + weight) and start at zero
                p.normal_(0.0, 0.3)
    return model.eval()


X = ids(batch=2, length=14, vocab=256)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_support_names_the_gemma_module(generation):
    assert check_config({"model_type": generation, "architectures": ["XForCausalLM"]}) == "gemma"
    model = make(generation)
    assert type(BackboneAdapter(model).family) is Gemma


def test_multimodal_gemma3_is_refused():
    with pytest.raises(NotSupported):
        check_config({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]})


@pytest.mark.parametrize("generation", GENERATIONS)
def test_hidden_states_match_hf(generation):
    check_hidden_states(make(generation), X)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_splice_reproduces_hf_logits(generation):
    check_splice(make(generation), X)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_extraction_stops_early(generation):
    check_stops_early(make(generation), X, layers=(1, 3))


@pytest.mark.parametrize("generation", ["gemma", "gemma3_text"])
def test_sdpa_matches_too(generation):
    model = make(generation, attn="sdpa")
    check_hidden_states(model, X)
    check_splice(model, X)


def test_gemma3_bidirectional_attention():
    model = make("gemma3_text", use_bidirectional_attention=True)
    check_hidden_states(model, X)
    check_splice(model, X)
    with torch.no_grad():  # the flag is live: the first position already sees later tokens
        causal = make("gemma3_text")(X, output_hidden_states=True).hidden_states[1]
        both = model(X, output_hidden_states=True).hidden_states[1]
    assert not torch.allclose(causal[:, 0], both[:, 0], atol=1e-3)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_embedding_scale_in_the_models_dtype(generation):
    """h_0 in bf16 bit-for-bit, from the scaled-embedding module and from the pre-5 path (a plain embedding)."""
    model = make(generation).to(torch.bfloat16)
    ad = BackboneAdapter(model)
    with torch.no_grad():
        ref = model(X, output_hidden_states=True).hidden_states[0]
        assert torch.equal(ad.embed(X), ref)
        plain = torch.nn.Embedding.from_pretrained(model.model.embed_tokens.weight)  # no embed_scale: scale in embed
        ad.family.core = type("Core", (), {"embed_tokens": plain})()
        assert torch.equal(ad.embed(X), ref)


# -- negative controls: each quirk dropped makes the checks fail ------------------------------------------------------


def _drop_embed_scale(monkeypatch):
    monkeypatch.setattr(Gemma, "embed", lambda self, x: torch.nn.functional.embedding(x, self.core.embed_tokens.weight))


def _drop_sliding_window(monkeypatch):
    full = gemma_family.window_mask

    def no_window(batch, length, device, dtype, window, causal=True):
        return full(batch, length, device, dtype, None, causal)

    monkeypatch.setattr(gemma_family, "window_mask", no_window)


def _drop_local_rotary(monkeypatch):
    rotaries = Gemma.rotaries

    def global_only(self, probe, pos):
        return dict.fromkeys((FULL, SLIDING), rotaries(self, probe, pos)[FULL])

    monkeypatch.setattr(Gemma, "rotaries", global_only)


def _drop_final_softcap(monkeypatch):
    monkeypatch.setattr(Gemma, "head", lambda self, h: self.lm_head(self.final_norm(h)))


CONTROLS = [
    *[(_drop_embed_scale, g, check_hidden_states) for g in GENERATIONS],
    *[(_drop_sliding_window, g, check_hidden_states) for g in ["gemma2", "gemma3_text"]],
    (_drop_local_rotary, "gemma3_text", check_hidden_states),
    *[(_drop_final_softcap, g, check_splice) for g in ["gemma2", "gemma3_text"]],
]


@pytest.mark.parametrize(
    ("drop", "generation", "check"), CONTROLS, ids=[f"{d.__name__[1:]}-{g}" for d, g, _ in CONTROLS]
)
def test_check_fails_without_the_quirk(monkeypatch, drop, generation, check):
    model = make(generation)
    drop(monkeypatch)
    with pytest.raises(AssertionError):
        check(model, X)


def test_attention_softcap_is_live():
    """Gemma 2's attention soft-capping lives in the block; the tiny config makes it matter."""
    model = make("gemma2")
    with torch.no_grad():
        capped = model(X).logits
        for blk in model.model.layers:
            blk.self_attn.attn_logit_softcapping = None
        assert (model(X).logits - capped).abs().max() > 1e-2
