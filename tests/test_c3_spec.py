"""C3's spec section and stage graph: the matched-budget rule at validate time, and baselines that no
geometry change re-runs (no model, no compute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dihal.compile.plan import plan
from dihal.spec.hashing import spec_hash
from dihal.spec.reader import read_yaml
from dihal.spec.schema import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
C3 = read_yaml(ROOT / "specs" / "c3.yaml")[0]


def with_changes(section: str, **fields) -> dict:
    raw = {**C3, section: {**(C3.get(section) or {}), **fields}}
    return raw


def problems(raw) -> list[tuple[str, object, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return info.value.problems


def test_shipped_c3_spec_is_valid_and_leaves_other_hashes_alone():
    spec, _ = load_spec(ROOT / "specs" / "c3.yaml")
    assert spec.baselines.interfaces == ("embedding_rounding", "embedding_readout", "latent_ae")
    quick, _ = load_spec(ROOT / "specs" / "quickstart.yaml")
    assert quick.baselines is None
    assert spec_hash(quick).startswith("68452cd8"), "an unset baselines section must not enter the hash"


@pytest.mark.parametrize(
    ("fields", "path", "value", "expect"),
    [
        ({"latent_width": 64}, "baselines.latent_width", 64, "same parameter count"),
        ({"recovery_steps": 3000}, "baselines.recovery_steps", 3000, "at most bridge.steps (1500)"),
        ({"interfaces": ["latent_ae", "latent_ae"]}, "baselines.interfaces", ["latent_ae", "latent_ae"], "distinct"),
        ({"interfaces": ["hidden"]}, "baselines.interfaces[0]", "hidden", "embedding_rounding"),
        ({"rounding": "dot"}, "baselines.rounding", "dot", "cosine"),
        ({"latent_heads": 3}, "baselines", None, "divisible by latent_heads"),
    ],
)
def test_a_spec_that_breaks_the_match_is_refused_naming_the_field(fields, path, value, expect):
    found = problems(with_changes("baselines", **fields))
    assert any(p == path and (value is None or v == value) and expect in msg for p, v, msg in found), found


def test_unmatched_is_the_explicit_way_past_the_rule():
    spec = parse_spec(with_changes("baselines", latent_width=64, recovery_steps=3000, unmatched=True))
    assert spec.baselines.latent_width == 64
    (stage,) = [s for s in plan(spec, 30).stages if s.label == "latent_ae-s0" and s.kind == "train"]
    assert stage.params["interface"]["unmatched"] is True


def test_baselines_need_a_bridge():
    raw = {**C3, "bridge": None}
    assert any(p == "bridge" for p, _, _ in problems(raw))


def baseline_stages(raw: dict) -> dict[str, str]:
    spec = parse_spec(raw)
    p = plan(spec, 30)
    train = {ev.upstream["train"].name for ev in p.baselines}
    return {s.label + "/" + s.kind: s.hash for s in p.stages if s.name in train or s in p.baselines}


def test_baseline_stages_share_the_bridge_protocol_and_no_geometry():
    spec = parse_spec(C3)
    p = plan(spec, 30)
    assert len(p.baselines) == 9 and len(p.evaluations) == 3
    bridge_train = p.evaluations[0].upstream["train"].params
    for ev in p.baselines:
        train = ev.upstream["train"]
        assert set(ev.upstream) == {"train"} and not train.upstream, "a baseline reads no geometry or selection"
        for key in ("d_model", "depth", "heads", "steps", "batch_size", "lr", "warmup", "objective", "seq_len"):
            assert train.params[key] == bridge_train[key], key
    before = baseline_stages(C3)
    for section, fields in (
        ("geometry", {"k": 8}),
        ("geometry", {"n_tokens": 4096}),
        ("select", {"rule": "fixed", "layer": 5}),
    ):
        assert baseline_stages(with_changes(section, **fields)) == before, (section, fields)


def test_a_baselines_field_reruns_only_the_interfaces_that_read_it():
    before = baseline_stages(C3)
    after = baseline_stages(with_changes("baselines", rounding="l2"))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {f"embedding_rounding-s{s}/{kind}" for s in (0, 1, 2) for kind in ("train", "evaluate")}
    after = baseline_stages(with_changes("baselines", latent_noise=0.2))
    assert {k.split("-s")[0] for k in before if before[k] != after[k]} == {"latent_ae"}


RECIPE = {
    "self_condition": True,
    "schedule": "shifted_cosine",
    "schedule_shift": 3.0,
    "time_sampling": "logit_normal",
    "time_loc": 0.5,
    "time_scale": 0.8,
}


def test_every_interface_trains_under_the_bridges_recipe_at_one_parameter_count():
    from dihal.cost.stages import denoiser_params
    from dihal.spec.schema import RECIPE_KEYS

    p = plan(parse_spec(with_changes("bridge", **RECIPE)), 30)
    bridge_train = p.evaluations[0].upstream["train"].params
    assert {k: bridge_train[k] for k in RECIPE_KEYS} == RECIPE
    counts = set()
    for ev in p.baselines + p.evaluations:
        train = ev.upstream["train"].params
        assert {k: train[k] for k in RECIPE_KEYS} == RECIPE, ev.label
        d_in = (train.get("interface") or {}).get("latent_width") or 576  # SmolLM2-135M's d; latent default
        counts.add(denoiser_params(d_in, train["d_model"], train["depth"], self_condition=train["self_condition"]))
    assert len(counts) == 1, "self-conditioning adds the same projection to every interface's denoiser"
    default = plan(parse_spec(C3), 30)
    assert {ev.upstream["train"].hash for ev in default.baselines}.isdisjoint(
        {ev.upstream["train"].hash for ev in p.baselines}
    ), "a recipe change re-trains every baseline, not only the bridge"


@pytest.mark.parametrize("key", list(RECIPE))
def test_a_baseline_recipe_of_its_own_is_refused(key):
    found = problems(with_changes("baselines", **{key: RECIPE[key]}))
    assert any(p == "baselines" and f"baselines.{key}" in msg and f"set bridge.{key}" in msg for p, _, msg in found)


def test_the_fields_refused_under_baselines_are_bridge_fields():
    from dihal.spec.baselines import SHARED_WITH_BRIDGE
    from dihal.spec.schema import RECIPE_KEYS, BridgeSpec

    assert set(RECIPE_KEYS) <= set(SHARED_WITH_BRIDGE) <= set(BridgeSpec.model_fields)
