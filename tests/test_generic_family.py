"""Architectures without a family module: refused at validate time from the config alone when they cannot be
split (encoder-only, encoder-decoder), split by hooks on the model's own forward (`families/generic.py`) when
they are decoder-only causal LMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dihal.backbone import BackboneAdapter, support
from dihal.backbone.families.generic import GenericFamily
from dihal.cli import app
from tests import family_checks
from tests.tiny import make_model

runner = CliRunner()


def tiny(arch: str, n_layers: int = 4):
    """StableLM (blocks return a tensor) and BLOOM (blocks return a tuple, ALiBi): no family module for either."""
    from transformers import BloomConfig, BloomForCausalLM, StableLmConfig, StableLmForCausalLM

    torch.manual_seed(0)
    if arch == "stablelm":
        cfg = StableLmConfig(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=1,
            eos_token_id=2,
        )
        return StableLmForCausalLM(cfg).eval()
    cfg = BloomConfig(vocab_size=256, hidden_size=32, n_layer=n_layers, n_head=4, bos_token_id=1, eos_token_id=2)
    return BloomForCausalLM(cfg).eval()


@pytest.fixture(params=["stablelm", "bloom"])
def model(request):
    assert request.param not in support.FAMILIES, "the generic path is tested on an architecture without a module"
    return tiny(request.param)


X = family_checks.ids(vocab=256)


# --- the three family checks, on the generic path ---------------------------------------------------------------
def test_generic_hidden_states_match_hf(model):
    ad = family_checks.check_hidden_states(model, X)
    assert isinstance(ad.family, GenericFamily) and ad.n_layers == 4 and ad.d == 32


def test_generic_splice_reproduces_the_logits(model):
    family_checks.check_splice(model, X)


def test_generic_extraction_stops_early(model):
    family_checks.check_stops_early(model, X)


# --- what the generic path does beyond the checks ---------------------------------------------------------------
def _computing(ad: BackboneAdapter) -> tuple[list[int], list]:
    """Blocks that really compute (a hook on a block's parts: a skipped block's hooks fire, its parts do not)."""
    ran = []
    handles = [
        next(iter(blk.children())).register_forward_hook(lambda *_, i=i: ran.append(i))
        for i, blk in enumerate(ad.blocks, 1)
    ]
    return ran, handles


@pytest.mark.parametrize("layer", [1, 3])
def test_splice_skips_the_blocks_below_the_cut(model, layer):
    ad = BackboneAdapter(model)
    with torch.no_grad():
        ref = model(X).logits
    h = ad.hidden_states(X, [layer])[layer]
    ran, handles = _computing(ad)
    try:
        got = ad.logits_from(h, layer)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == list(range(layer + 1, ad.n_layers + 1))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    ad.family.skip_lower = False  # run-but-override: the same logits, every block computing
    ran, handles = _computing(ad)
    torch.testing.assert_close(ad.logits_from(h, layer), ref, rtol=1e-5, atol=1e-5)
    assert ran == list(range(1, ad.n_layers + 1))


def test_pieces_and_partial_runs_compose(model):
    ad = BackboneAdapter(model)
    hs = ad.hidden_states(X, list(range(ad.n_layers + 1)))
    with torch.no_grad():
        ref = model(X).logits
        torch.testing.assert_close(ad.embed(X), hs[0])
        torch.testing.assert_close(ad.run_blocks(hs[1], 1, 3), hs[3], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ad.block(2, hs[1], ad.positions(*X.shape)), hs[2], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ad.head(hs[ad.n_layers]), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ad.logits(X), ref, rtol=1e-5, atol=1e-5)
    assert ad.run_blocks(hs[2], 2, 2) is hs[2]


def test_hooks_live_only_inside_a_call(model):
    ad = BackboneAdapter(model)
    hs = ad.hidden_states(X, [2])
    with pytest.raises(RuntimeError):  # a wrong width fails inside the model's forward
        ad.logits_from(torch.zeros(2, 12, 7), 2)
    ad.logits_from(hs[2], 2)
    for blk in ad.blocks:
        assert not blk._forward_hooks and not blk._forward_pre_hooks and "forward" not in blk.__dict__


def test_forced_generic_on_llama_equals_the_block_loop():
    m = make_model("llama", n_layers=4)
    fast, generic = BackboneAdapter(m), BackboneAdapter(m, family=GenericFamily)
    x = family_checks.ids(vocab=512)
    a, b = fast.hidden_states(x, [0, 2, 4]), generic.hidden_states(x, [0, 2, 4])
    for layer in a:
        torch.testing.assert_close(a[layer], b[layer], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            fast.logits_from(a[layer], layer), generic.logits_from(a[layer], layer), rtol=1e-5, atol=1e-5
        )
    assert generic.final_norm is m.model.norm and generic.lm_head is m.lm_head


def test_the_generic_path_is_announced_once(capsys, monkeypatch):
    from dihal.backbone import families

    monkeypatch.setattr(families, "_NOTICED", set())
    m = tiny("stablelm", n_layers=2)
    BackboneAdapter(m)
    BackboneAdapter(m)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "generic path" in ln]
    assert len(lines) == 1 and "'stablelm'" in lines[0]


# --- support decided from a config alone ------------------------------------------------------------------------
CONFIGS = {
    "bert": ({"model_type": "bert", "architectures": ["BertForMaskedLM"], "num_hidden_layers": 4}, "not a causal LM"),
    "t5": (
        {
            "model_type": "t5",
            "architectures": ["T5ForConditionalGeneration"],
            "is_encoder_decoder": True,
            "num_layers": 4,
        },
        "encoder-decoder",
    ),
    "unknown, no architecture": ({"model_type": "mystery", "num_hidden_layers": 4}, "'mystery' is not supported"),
}


def test_check_config():
    for config, why in CONFIGS.values():
        with pytest.raises(support.NotSupported, match=why):
            support.check_config(config)
    assert support.check_config({"model_type": "stablelm", "architectures": ["StableLmForCausalLM"]}) == support.GENERIC
    assert support.check_config({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}) == "llama"


def _project(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")  # validate looks for a weights file, not into it
    (tmp_path / "spec.yaml").write_text("name: x\nbackbone: {source: local, id: model}\n")
    return tmp_path


@pytest.mark.parametrize("case", list(CONFIGS), ids=list(CONFIGS))
def test_validate_refuses_an_architecture_that_cannot_be_split(case, tmp_path, monkeypatch):
    config, why = CONFIGS[case]
    root = _project(tmp_path, config)
    monkeypatch.chdir(root)
    for cmd in (["validate", "spec.yaml"], ["run", "spec.yaml", "--project", str(root)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        text = " ".join(res.output.split())
        assert "backbone: got 'model'" in text and why in text, res.output
        assert all(name in text for name in support.supported_types()), "the message lists what is supported"
    assert sorted(p.name for p in root.iterdir()) == ["model", "spec.yaml"], "nothing may be written"
    assert sorted(p.name for p in (root / "model").iterdir()) == ["config.json", "model.safetensors"]


def test_validate_accepts_an_unknown_decoder_only_lm_with_a_notice(tmp_path, monkeypatch):
    root = _project(
        tmp_path, {"model_type": "mystery", "architectures": ["MysteryForCausalLM"], "num_hidden_layers": 4}
    )
    monkeypatch.chdir(root)
    res = runner.invoke(app, ["validate", "spec.yaml"])
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.output.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "'mystery'" in notes[0] and "generic path" in notes[0], res.output
