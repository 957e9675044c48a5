"""The adapter's explicit block loop must agree with HF's own forward."""

from __future__ import annotations

import pytest
import torch

from dihal.backbone import BackboneAdapter, UnsupportedArchitecture, load_backbone
from dihal.spec.schema import BackboneSpec
from tests.tiny import make_model


@pytest.fixture(params=["llama", "gpt2"])
def model(request):
    return make_model(request.param, n_layers=5)


def ids(batch=2, length=12, vocab=512):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, vocab, (batch, length), generator=g)
    x[:, 0] = 1
    return x


def test_hidden_states_match_hf(model):
    ad = BackboneAdapter(model)
    x = ids()
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    hs = ad.hidden_states(x, list(range(ad.n_layers + 1)))
    for layer in range(ad.n_layers):  # HF's last slot is final-normed: compare h_L after the norm
        torch.testing.assert_close(hs[layer], ref.hidden_states[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ad.final_norm(hs[ad.n_layers]), ref.hidden_states[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [1, 2, 4])
def test_splice_with_true_states_reproduces_the_backbone_logits(model, layer):
    ad = BackboneAdapter(model)
    x = ids()
    with torch.no_grad():
        ref = model(x).logits
    h = ad.hidden_states(x, [layer])[layer]
    torch.testing.assert_close(ad.logits_from(h, layer), ref, rtol=1e-5, atol=1e-5)


def test_extraction_stops_at_the_deepest_requested_layer(model):
    ad = BackboneAdapter(model)
    called = []
    for i, blk in enumerate(ad.blocks, start=1):
        blk.register_forward_hook(lambda *_, i=i: called.append(i))
    lm_calls = []
    ad.lm_head.register_forward_hook(lambda *_: lm_calls.append(1))
    ad.hidden_states(ids(), [1, 2])
    assert called == [1, 2] and not lm_calls


def test_backbone_is_frozen(model):
    ad = BackboneAdapter(model)
    assert not any(p.requires_grad for p in ad.model.parameters())


def test_unknown_architecture_is_named():
    from transformers import BertConfig, BertForMaskedLM

    m = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(UnsupportedArchitecture, match="'bert'"):
        BackboneAdapter(m)


def test_run_blocks_checks_its_range(model):
    ad = BackboneAdapter(model)
    with pytest.raises(ValueError, match="start"):
        ad.run_blocks(torch.zeros(1, 3, ad.d), 3, 2)


def test_local_directory_loads(tiny_llama):
    bb = load_backbone(BackboneSpec(source="local", id=str(tiny_llama)))
    ad = BackboneAdapter(bb.model)
    assert ad.n_layers == 4 and bb.bos_id == 1


def test_attention_implementation_is_explicit_and_unset_keeps_old_hashes(tiny_llama):
    from dihal.spec.hashing import spec_hash
    from dihal.spec.schema import parse_spec

    assert spec_hash(parse_spec({"name": "a", "backbone": {"attn_implementation": None}})) == spec_hash(
        parse_spec({"name": "a"})
    )
    bb = load_backbone(BackboneSpec(source="local", id=str(tiny_llama), attn_implementation="eager"))
    assert bb.model.config._attn_implementation == "eager"
