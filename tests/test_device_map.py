"""backbone.device_map / backbone.max_memory: placement by accelerate at load time, checked on CPU.

On a CPU-only machine every placement puts every weight on "cpu", so the three loads must agree
exactly: this pins that the loader passes the map through, that accelerate's placement (hooks
included, for an explicit per-module map) does not change a single number the adapter computes,
and that specs which never set the fields keep their hashes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dihal.backbone import BackboneAdapter, load_backbone
from dihal.backbone.loading import placement_kwargs
from dihal.spec.hashing import semantic_dict, spec_hash
from dihal.spec.schema import BackboneSpec, SpecError, load_spec, parse_spec
from tests.tiny import save_tiny

N_LAYERS = 4
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-dm"), "llama", n_layers=N_LAYERS)


def per_module_map() -> dict[str, str]:
    return {
        "model.embed_tokens": "cpu",
        **{f"model.layers.{i}": "cpu" for i in range(N_LAYERS)},
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }


def ids(batch: int = 2, length: int = 12) -> torch.Tensor:
    x = torch.randint(3, 200, (batch, length), generator=torch.Generator().manual_seed(7))
    x[:, 0] = 1
    return x


def load(path: Path, device_map=None) -> BackboneAdapter:
    bb = load_backbone(BackboneSpec(source="local", id=str(path), device_map=device_map))
    return BackboneAdapter(bb.model)


def test_three_placements_give_identical_states_and_logits(tiny, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    x = ids()
    layers = list(range(N_LAYERS + 1))
    plain, auto, explicit = load(tiny), load(tiny, "auto"), load(tiny, per_module_map())
    assert seen == [None, "auto", per_module_map()]  # the map reaches from_pretrained as written
    ref_states, ref_logits = plain.hidden_states(x, layers), plain.logits(x)
    assert ref_logits.shape == (2, 12, plain.model.config.vocab_size)
    # transformers attaches no hooks when every module lands on one device (here: cpu), so also run the
    # adapter through accelerate's per-module hooks, as a map over several devices gets them
    hooked = load(tiny)
    from accelerate import dispatch_model

    dispatch_model(hooked.model, device_map=per_module_map(), main_device="cpu", force_hooks=True)
    assert hasattr(hooked.model.model.layers[0], "_hf_hook") and hasattr(hooked.lm_head, "_hf_hook")
    for ad in (auto, explicit, hooked):
        assert ad.device == torch.device("cpu") and ad.embed_device == torch.device("cpu")
        states = ad.hidden_states(x, layers)
        assert sorted(states) == layers
        for layer in layers:
            torch.testing.assert_close(states[layer], ref_states[layer], rtol=0, atol=0, msg=f"layer {layer}")
        torch.testing.assert_close(ad.logits(x), ref_logits, rtol=0, atol=0)
        torch.testing.assert_close(ad.logits_from(ref_states[2], 2), ref_logits, rtol=0, atol=0)


def test_device_string_and_max_memory_reach_from_pretrained(tiny):
    ad = load(tiny, "cpu")
    torch.testing.assert_close(ad.logits(ids()), load(tiny).logits(ids()), rtol=0, atol=0)
    spec = BackboneSpec(source="local", id=str(tiny), device_map="auto", max_memory={"cpu": "2GiB"})
    assert placement_kwargs(spec) == {"device_map": "auto", "max_memory": {"cpu": "2GiB"}}
    bb = load_backbone(spec)
    assert {p.device.type for p in bb.model.parameters()} == {"cpu"}
    gpu = BackboneSpec(device_map={"model": "cuda:1", "lm_head": "cuda"}, max_memory={"cuda:1": "20GiB"})
    assert placement_kwargs(gpu) == {"device_map": {"model": 1, "lm_head": 0}, "max_memory": {1: "20GiB"}}
    assert placement_kwargs(BackboneSpec(device_map="cuda:2")) == {"device_map": {"": 2}}
    assert placement_kwargs(BackboneSpec()) == {}


@pytest.mark.parametrize(
    ("backbone", "path", "expected"),
    [
        ({"max_memory": {"cpu": "8GiB"}}, "backbone.max_memory", "only used with device_map"),
        ({"device_map": "everywhere"}, "backbone.device_map", "expected 'auto', a device"),
        ({"device_map": {"lm_head": "gpu0"}}, "backbone.device_map", "device of module 'lm_head'"),
        ({"device_map": {"lm_head": 0}}, "backbone.device_map", "device of module 'lm_head'"),
        ({"device_map": {}}, "backbone.device_map", "non-empty map"),
        ({"device_map": "auto", "max_memory": {"gpu": "8GiB"}}, "backbone.max_memory", "keys must be devices"),
        ({"device_map": "auto", "max_memory": {"cpu": "lots"}}, "backbone.max_memory", "such as '20GiB'"),
        ({"device_map": "auto", "max_memory": {"cpu": 8}}, "backbone.max_memory", "such as '20GiB'"),
    ],
)
def test_bad_placements_are_refused_by_name(backbone, path, expected):
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "a", "backbone": backbone})
    problems = err.value.problems
    assert len(problems) == 1, problems
    assert problems[0][0] == path and expected in problems[0][2], problems


def test_unset_fields_keep_hashes_and_set_ones_change_them():
    quick, _ = load_spec(REPO / "specs" / "quickstart.yaml")
    assert spec_hash(quick).startswith("68452cd8")
    assert "device_map" not in semantic_dict(quick)["backbone"]
    assert "max_memory" not in semantic_dict(quick)["backbone"]
    base = spec_hash(parse_spec({"name": "a"}))
    assert spec_hash(parse_spec({"name": "a", "backbone": {"device_map": None, "max_memory": None}})) == base
    auto = spec_hash(parse_spec({"name": "a", "backbone": {"device_map": "auto"}}))
    capped = spec_hash(parse_spec({"name": "a", "backbone": {"device_map": "auto", "max_memory": {"cpu": "8GiB"}}}))
    assert len({base, auto, capped}) == 3
