"""Spec validation and the spec hash's invariants."""

from __future__ import annotations

import random

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dihal.compile.plan import plan
from dihal.spec.hashing import digest, spec_hash
from dihal.spec.schema import Spec, SpecError, parse_spec

MINIMAL = {"name": "t"}


def h(raw: dict) -> str:
    return spec_hash(parse_spec(raw))


def test_defaults_are_filled_and_spelled_out_defaults_do_not_change_the_hash():
    spec = parse_spec(MINIMAL)
    assert spec.geometry.k == 16 and spec.geometry.n_tokens == 8192 and spec.bridge.steps == 600
    full = spec.model_dump(mode="json")
    assert h(full) == h(MINIMAL)


def test_yaml_comments_key_order_and_float_spelling_do_not_change_the_hash():
    a = yaml.safe_load("name: a\ngeometry:\n  ridge: 1e-3  # a comment\n  k: 16\nseed: 0\n")
    b = yaml.safe_load("seed: 0\ngeometry: {k: 16, ridge: 0.001}\nname: a\n")
    assert h(a) == h(b) == h({"name": "a"})


@given(st.text(min_size=1, max_size=40), st.text(max_size=40))
def test_labels_are_not_part_of_the_hash(name, description):
    assert h({"name": name, "description": description}) == h(MINIMAL)


SEMANTIC_CHANGES = [
    {"seed": 1},
    {"geometry": {"k": 17}},
    {"geometry": {"ridge": 2e-3}},
    {"geometry": {"n_tokens": 4096}},
    {"geometry": {"proxies": {"kappa": 1, "erank": -1}}},
    {"backbone": {"dtype": "float64"}},
    {"data": {"splits": {"train": 0.7, "validation": 0.2, "geometry": 0.1}}},
    {"select": {"rule": "fixed", "layer": 3}},
    {"bridge": {"steps": 601}},
    {"bridge": {"objective": "eps"}},
    {"eval": {"n_samples": 8}},
    {"bridge": None},
    {"data": {"block_start": "bos"}},
    {"data": {"block_align": "any"}},
    {"data": {"max_blocks_per_document": 2}},
    {"geometry": {"outliers": {"rule": "keep"}}},
    {"geometry": {"outliers": {"threshold": 8}}},
    {"geometry": {"n_boot": 400}},
    {"bridge": {"outliers": {"rule": "clip"}}},
    {"sensitivity": [{"name": "keep", "geometry": {"outliers": {"rule": "keep"}}}]},
    {"backbone": {"attn_implementation": "eager"}},
]


@pytest.mark.parametrize("change", SEMANTIC_CHANGES, ids=lambda c: str(c)[:40])
def test_any_semantic_change_changes_the_hash(change):
    assert h({**MINIMAL, **change}) != h(MINIMAL)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 200), anchors=st.integers(1, 4096), seed=st.integers(0, 2**31 - 1))
def test_hash_is_a_function_of_the_validated_values(k, anchors, seed):
    raw = {"name": "x", "seed": seed, "geometry": {"k": k, "anchors": anchors}}
    shuffled = dict(random.Random(seed).sample(list(raw.items()), len(raw)))
    assert h(raw) == h(shuffled)
    assert (h(raw) == h({**raw, "geometry": {"k": k + 1, "anchors": anchors}})) is False


def test_stage_identities_follow_their_own_fields():
    base = plan(parse_spec(MINIMAL), n_layers=30)
    k = plan(parse_spec({**MINIMAL, "geometry": {"k": 8}}), n_layers=30)
    assert base.extract.hash == k.extract.hash  # extraction shared
    assert base.score.hash != k.score.hash and base.select.hash != k.select.hash
    steps = plan(parse_spec({**MINIMAL, "bridge": {"steps": 300}}), n_layers=30)
    assert steps.score.hash == base.score.hash
    assert steps.by_kind("targets")[0].hash == base.by_kind("targets")[0].hash  # no re-extraction
    assert steps.by_kind("train")[0].hash != base.by_kind("train")[0].hash
    boot = plan(parse_spec({**MINIMAL, "bridge": {"layers": [1, 2, 3]}, "eval": {"n_boot": 50}}), n_layers=30)
    sweep = plan(parse_spec({**MINIMAL, "bridge": {"layers": [1, 2, 3]}}), n_layers=30)
    assert [s.name for s in boot.evaluations] == [s.name for s in sweep.evaluations]  # only correlate changes
    assert boot.correlate.name != sweep.correlate.name
    renamed = plan(parse_spec({"name": "other", "description": "x"}), n_layers=30)
    computing = [s.name for s in base.stages if s.kind != "summary"]
    assert [s.name for s in renamed.stages if s.kind != "summary"] == computing and computing
    assert renamed.summary.name != base.summary.name  # it writes metrics/summary-<spec name>.json


def test_geometry_options_rescore_without_reextracting_and_bridge_outliers_retrain():
    sweep = {**MINIMAL, "bridge": {"layers": [2, 3, 4]}}
    base = plan(parse_spec(sweep), n_layers=30)
    rule = plan(parse_spec({**sweep, "geometry": {"outliers": {"rule": "keep"}, "n_boot": 50}}), n_layers=30)
    assert rule.extract.hash == base.extract.hash and rule.score.hash != base.score.hash
    assert [t.hash for t in rule.by_kind("train")] == [t.hash for t in base.by_kind("train")]  # swept: kept
    warn = plan(parse_spec({**sweep, "geometry": {"warn_top_share": 0.2}}), n_layers=30)
    assert [s.name for s in warn.stages] == [s.name for s in base.stages]  # a display threshold recomputes nothing
    std = plan(parse_spec({**MINIMAL, "bridge": {"layers": [2, 3, 4], "outliers": {"rule": "keep"}}}), n_layers=30)
    assert std.score.hash == base.score.hash and std.by_kind("train")[0].hash != base.by_kind("train")[0].hash
    blocks = plan(parse_spec({**MINIMAL, "data": {"block_start": "eos"}}), n_layers=30)
    assert blocks.extract.hash != base.extract.hash


def test_a_variant_is_the_spec_with_its_changes():
    spec = parse_spec(
        {**MINIMAL, "geometry": {"k": 8}, "sensitivity": [{"name": "keep", "geometry": {"outliers": {"rule": "keep"}}}]}
    )
    v = spec.variant("keep")
    assert v.geometry.k == 8 and v.geometry.outliers.rule == "keep" and v.geometry.outliers.threshold == 20
    assert v.bridge is None and v.sensitivity == () and spec.geometry.outliers.rule == "drop"
    with pytest.raises(SpecError, match="distinct"):
        parse_spec({**MINIMAL, "sensitivity": [{"name": "a", "data": {"block_align": "any"}}] * 2})


def test_digest_is_order_insensitive():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})


def problems(raw) -> list[tuple[str, object, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return info.value.problems


@pytest.mark.parametrize(
    ("raw", "path", "value", "expect"),
    [
        ({"name": "a", "geometri": {}}, "geometri", {}, "unknown key"),
        ({"name": "a", "geometry": {"kk": 3}}, "geometry.kk", 3, "unknown key"),
        ({"name": "a", "geometry": {"k": 0}}, "geometry.k", 0, "greater than 0"),
        ({"name": "a", "geometry": {"k": "many"}}, "geometry.k", "many", "integer"),
        ({"name": "a", "seed": -1}, "seed", -1, "greater than or equal to 0"),
        ({"name": "a", "backbone": {"device": "gpu"}}, "backbone.device", "gpu", "cuda"),
        ({"name": "a", "geometry": {"proxies": {"kapa": 1}}}, "geometry.proxies", {"kapa": 1}, "unknown proxy 'kapa'"),
        ({"name": "a", "select": {"rule": "fixed"}}, "select", {"rule": "fixed"}, "layer is required"),
        ({"name": "a", "bridge": {"d_model": 130, "heads": 4}}, "bridge", {"d_model": 130, "heads": 4}, "divisible"),
        ({"name": "a", "geometry": {"layers": [3]}}, "geometry.layers", [3], "at least 2"),
        ({"geometry": {}}, "name", "<missing>", "required"),
        ({"name": "a", "geometry": {"outliers": {"rule": "trim"}}}, "geometry.outliers.rule", "trim", "'drop'"),
        ({"name": "a", "geometry": {"outliers": {"threshold": 1}}}, "geometry.outliers.threshold", 1, "greater than 1"),
        ({"name": "a", "geometry": {"n_boot": 5}}, "geometry.n_boot", 5, "at least 20"),
        ({"name": "a", "data": {"block_align": "word"}}, "data.block_align", "word", "'sentence'"),
        (
            {"name": "a", "sensitivity": [{"name": "v", "geometry": {"outliers": {"rule": "x"}}}]},
            "sensitivity[0].geometry.outliers.rule",
            "x",
            "'drop'",
        ),
        (
            {"name": "a", "sensitivity": [{"name": "v", "data": {"blok_start": "bos"}}]},
            "sensitivity[0].data.blok_start",
            "bos",
            "not a field of data",
        ),
        (
            {"name": "a", "sensitivity": [{"name": "v", "geometry": {"n_boot": 200}}]},
            "sensitivity[0]",
            "v",
            "changes at least one",
        ),
        (
            {"name": "a", "sensitivity": [{"name": "bad name!", "data": {"block_align": "any"}}]},
            "sensitivity[0].name",
            "bad name!",
            "pattern",
        ),
    ],
)
def test_errors_name_the_field_the_value_and_the_expectation(raw, path, value, expect):
    found = problems(raw)
    assert any(p == path and v == value and expect in e for p, v, e in found), found


def test_error_text_is_readable():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "a", "geometry": {"k": 0}})
    text = str(info.value)
    assert "geometry.k: got 0" in text and "greater than 0" in text


def test_non_mapping_spec_is_refused():
    assert problems(["a", "list"])[0][0] == "<root>"


def test_specs_are_frozen():
    spec = parse_spec(MINIMAL)
    with pytest.raises(ValidationError):
        spec.seed = 3  # type: ignore[misc]
    assert isinstance(spec, Spec)
