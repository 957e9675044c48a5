"""The bridge recipe as spec options: validation, the spec hash, and the train and evaluate stages they reach."""

from __future__ import annotations

import pytest

from dihal.compile.plan import plan
from dihal.spec.hashing import semantic_dict, spec_hash
from dihal.spec.schema import RECIPE_KEYS, SpecError, parse_spec

MINIMAL = {"name": "t"}
RECIPE = {
    "self_condition": True,
    "schedule": "shifted_cosine",
    "schedule_shift": 2.0,
    "time_sampling": "logit_normal",
    "time_loc": 0.5,
    "time_scale": 1.5,
}


def spec(**bridge):
    return parse_spec({**MINIMAL, "bridge": bridge})


def problems(**bridge) -> list[tuple[str, object, str]]:
    with pytest.raises(SpecError) as info:
        spec(**bridge)
    return info.value.problems


def test_defaults_are_todays_recipe_and_leave_the_spec_hash_alone():
    s = spec()
    assert s.bridge.recipe() == dict(zip(RECIPE_KEYS, (False, "cosine", 1.0, "uniform", 0.0, 1.0)))
    spelled = spec(**s.bridge.recipe())
    assert spec_hash(spelled) == spec_hash(s)
    assert not set(RECIPE_KEYS) & set(semantic_dict(s)["bridge"]), "defaults are left out of the hashed dict"


@pytest.mark.parametrize("key", RECIPE_KEYS)
def test_each_option_enters_the_hash_and_the_train_stage_but_not_the_targets(key):
    base = spec()
    changed = {key: RECIPE[key]}
    if key in ("schedule", "schedule_shift"):
        changed.update(schedule="shifted_cosine", schedule_shift=RECIPE["schedule_shift"])
    if key in ("time_loc", "time_scale"):
        changed["time_sampling"] = "logit_normal"
    other = spec(**changed)
    assert spec_hash(other) != spec_hash(base)
    a, b = plan(base, 30), plan(other, 30)
    (train_a,), (train_b,) = a.by_kind("train"), b.by_kind("train")
    assert train_b.params[key] == RECIPE[key] and train_a.params[key] != RECIPE[key]
    assert train_a.hash != train_b.hash
    assert a.evaluations[0].hash != b.evaluations[0].hash, "evaluate reads the recipe from the bridge it loads"
    assert a.by_kind("targets")[0].hash == b.by_kind("targets")[0].hash, "no re-extraction for a recipe change"


def test_the_whole_recipe_reaches_the_stage_config():
    (train,) = plan(spec(**RECIPE), 30).by_kind("train")
    assert {k: train.config()["params"][k] for k in RECIPE_KEYS} == RECIPE


@pytest.mark.parametrize(
    ("bridge", "expect"),
    [
        ({"schedule": "shifted_cosine"}, "schedule_shift must be > 1 with schedule: shifted_cosine, got 1.0"),
        ({"schedule": "shifted_cosine", "schedule_shift": 0.5}, "schedule_shift must be > 1"),
        ({"schedule": "shifted_cosine", "schedule_shift": 101}, "less than or equal to 100"),
        ({"schedule_shift": 2.0}, "schedule_shift (2.0) is only used with schedule: shifted_cosine"),
        ({"time_loc": 1.0}, "time_loc (1.0) and time_scale (1.0) are only used with time_sampling: logit_normal"),
        ({"time_sampling": "logit_normal", "time_scale": 0}, "greater than 0"),
        ({"schedule": "tan"}, "'cosine' or 'shifted_cosine'"),
        ({"time_sampling": "beta"}, "'uniform' or 'logit_normal'"),
        ({"self_condition": "maybe"}, "valid boolean"),
        ({"schedule_shift": True, "schedule": "shifted_cosine"}, "a number, not true/false"),
    ],
)
def test_bad_recipes_are_refused_naming_field_and_value(bridge, expect):
    found = problems(**bridge)
    assert any(expect in msg for _, _, msg in found), found


def test_the_trainer_accepts_every_recipe_the_spec_accepts():
    from dihal.bridge.train import TrainConfig

    cfg = TrainConfig(**spec(**RECIPE).bridge.recipe())
    assert cfg.noise_schedule.shift == 2.0 and cfg.time_sampler.loc == 0.5
