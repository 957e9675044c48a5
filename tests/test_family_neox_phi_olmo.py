"""GPT-NeoX / Pythia, Phi-3 (and Phi-1/2), OLMo 2 (and OLMo 1): the three exactness checks of issue 11 on tiny
random models built in code, and negative controls showing the checks catch a family that gets a detail wrong."""

from __future__ import annotations

import copy

import pytest
import torch

from dihal.backbone import BackboneAdapter
from dihal.backbone.support import check_config
from tests.family_checks import check_hidden_states, check_splice, check_stops_early, ids

ATOL = 1e-5
# initializer_range 0.1 (HF's default is 0.02) so attention is far from uniform and every detail shows in h_ℓ
COMMON = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.1,
)
LONGROPE = dict(
    rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.5, short_factor=[1.0, 1.5], long_factor=[2.0, 3.0]
)


def build(name: str, attn: str = "eager"):
    import transformers as tf

    torch.manual_seed(0)
    if name.startswith("gpt_neox"):  # Pythia: rotary_pct 0.25; here 0.5 of head_dim 8 → 4 rotated dims
        cfg = tf.GPTNeoXConfig(**COMMON, rotary_pct=0.5, use_parallel_residual=name == "gpt_neox-parallel")
        model = tf.GPTNeoXForCausalLM(cfg)
    elif name == "phi3":  # Phi-4-mini-style partial rotary, GQA, and a window shorter than the sequence
        cfg = tf.Phi3Config(**COMMON, num_key_value_heads=2, partial_rotary_factor=0.5, sliding_window=5)
        model = tf.Phi3ForCausalLM(cfg)
    elif name == "phi3-longrope":  # Phi-3-128k-style LongRoPE, sequence longer than the original context
        cfg = tf.Phi3Config(
            **COMMON, num_key_value_heads=2, rope_parameters=dict(LONGROPE), original_max_position_embeddings=8
        )
        model = tf.Phi3ForCausalLM(cfg)
    elif name == "phi":
        cfg = tf.PhiConfig(**COMMON, partial_rotary_factor=0.5, qk_layernorm=True)
        model = tf.PhiForCausalLM(cfg)
    elif name == "olmo2":
        model = tf.Olmo2ForCausalLM(tf.Olmo2Config(**COMMON, num_key_value_heads=2))
    elif name == "olmo":
        model = tf.OlmoForCausalLM(tf.OlmoConfig(**COMMON, clip_qkv=0.5))
    else:
        raise ValueError(name)
    model.config._attn_implementation = attn
    return model.eval()


NAMES = ["gpt_neox-parallel", "gpt_neox-sequential", "phi3", "phi3-longrope", "phi", "olmo2", "olmo"]
MODULE = {"gpt_neox": "gpt_neox", "phi3": "phi3", "phi": "phi", "olmo2": "olmo2", "olmo": "olmo2"}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", NAMES)
def test_family_is_exact(name, attn):
    model = build(name, attn)
    x = ids(length=12)
    ad = check_hidden_states(model, x, ATOL)
    check_splice(model, x, ATOL)
    check_stops_early(model, x)
    assert check_config({"model_type": model.config.model_type}) == MODULE[model.config.model_type]
    assert ad.n_layers == 4 and ad.d == 32


def test_neox_head_is_lm_head():
    """Pythia checkpoints call the head `embed_out`; transformers 5 loads it as `lm_head`, which is what runs."""
    model = build("gpt_neox-parallel")
    assert BackboneAdapter(model).lm_head is model.lm_head


# -- negative controls: the checks fail on a family that gets one detail wrong -------------------------------


def _fails(monkeypatch, module: str, family, model) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module(f"dihal.backbone.families.{module}"), "FAMILY", family)
    with pytest.raises(AssertionError):
        check_hidden_states(model, ids(length=12), ATOL)


@pytest.mark.parametrize("name", ["gpt_neox-parallel", "gpt_neox-sequential"])
def test_control_neox_residual_flipped(monkeypatch, name):
    from dihal.backbone.families.gpt_neox import GPTNeoX

    class Flipped(GPTNeoX):  # runs each layer with the other residual form
        def block(self, index, h, ctx):
            blk = self.blocks[index - 1]
            blk.use_parallel_residual = not blk.use_parallel_residual
            try:
                return super().block(index, h, ctx)
            finally:
                blk.use_parallel_residual = not blk.use_parallel_residual

    _fails(monkeypatch, "gpt_neox", Flipped, build(name))


def test_control_neox_full_rotary(monkeypatch):
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

    from dihal.backbone.families.gpt_neox import GPTNeoX

    class FullRotary(GPTNeoX):  # ignores rotary_pct: rotates every dim of each head
        def positions(self, batch, length, device, dtype):
            ctx = super().positions(batch, length, device, dtype)
            cfg = copy.deepcopy(self.config)
            cfg.rope_parameters["partial_rotary_factor"] = 1.0
            probe = torch.empty(batch, length, self.hidden_size, device=device, dtype=dtype)
            ctx.rotary = GPTNeoXRotaryEmbedding(cfg)(probe, position_ids=ctx.position_ids)
            return ctx

    _fails(monkeypatch, "gpt_neox", FullRotary, build("gpt_neox-parallel"))


def test_control_phi3_without_window(monkeypatch):
    from dihal.backbone.families.base import Family

    _fails(monkeypatch, "phi3", Family, build("phi3"))  # the base family's plain causal mask
