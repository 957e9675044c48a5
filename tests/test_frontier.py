"""eval.frontier end to end on the tiny random Llama (real DVC, DuckDB, transformers): one frontier stage per
trained bridge writing one row per (temperature, steps) point, the backbone's own frontier, the ledger's
frontier_points, the report's chart, the same numbers from the same spec, and the spec's validation and cost."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.test_cost import plan_json, variant
from tests.test_run_tiny import BASE, invoke
from tests.tiny import ledger_rows, tiny_project, write_spec_from

FRONTIER = {"temperatures": [0.0, 1.0], "steps": [2, 5], "n_samples": 4}
SPEC = {**BASE, "eval": {**BASE["eval"], "frontier": FRONTIER}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    with tiny_project(tmp_path_factory.mktemp("frontier")) as root:
        yield root


def _configs(project, kind: str) -> list[dict]:
    """Every compiled `kind` stage config in the project."""
    return [json.loads(p.read_text()) for p in (project / ".dihal" / "stages").glob(f"{kind}-*.json")]


@pytest.fixture(scope="module")
def frontier_run(project):
    spec = write_spec_from(SPEC, project, "front")
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    return spec, {("train" in c["inputs"]): c for c in _configs(project, "frontier")}


def test_the_frontier_stage_writes_one_row_per_point(project, frontier_run):
    _, configs = frontier_run
    assert set(configs) == {True, False}, "one frontier stage for the one bridge, one for the backbone"
    bridge = json.loads((project / configs[True]["out"] / "frontier.json").read_text())
    assert [(r["temperature"], r["steps"]) for r in bridge] == [(0.0, 2), (1.0, 2), (0.0, 5), (1.0, 5)]
    assert {r["interface"] for r in bridge} == {"hidden"} and {r["n_samples"] for r in bridge} == {4}
    assert all(r["gen_ppl"] > 0 and 0 <= r["diversity"] <= 1 and r["unigram_entropy"] >= 0 for r in bridge)
    evaluated = json.loads(next((project / "artifacts" / "evaluate").glob("*/metrics.json")).read_text())
    assert bridge[2]["gen_ppl"] == evaluated["gen_ppl"], "the point at eval's temperature, steps and n is evaluate's"
    own = json.loads((project / configs[False]["out"] / "frontier.json").read_text())
    assert [(r["interface"], r["temperature"], r["steps"], r["layer"]) for r in own] == [
        ("backbone", 0.0, None, None),
        ("backbone", 1.0, None, None),
    ]
    refs = json.loads(next((project / "artifacts" / "reference").glob("*/references.json")).read_text())
    by_ref = {r["reference"]: r for r in refs}
    # same prompts, judge and draws as the reference stage (its n_samples is eval.n_samples = 4 here too)
    assert own[1]["samples_digest"] != own[0]["samples_digest"]
    assert own[1]["gen_ppl"] == pytest.approx(by_ref["backbone_t1"]["gen_ppl"], rel=1e-6)
    assert own[0]["gen_ppl"] == pytest.approx(by_ref["backbone_greedy"]["gen_ppl"], rel=1e-6)


def test_the_ledger_keeps_every_point_and_the_report_draws_them(project, frontier_run):
    rows = ledger_rows(
        project,
        "SELECT interface, temperature, steps, gen_ppl, stage, point, run_id FROM frontier_points_named "
        "WHERE spec_name = 'front' ORDER BY interface DESC, steps, temperature",
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("hidden", 0.0, 2),
        ("hidden", 1.0, 2),
        ("hidden", 0.0, 5),
        ("hidden", 1.0, 5),
        ("backbone", 0.0, None),
        ("backbone", 1.0, None),
    ]
    assert all(r[3] > 0 and r[4].startswith("frontier-") and r[6] for r in rows)
    html = (project / "reports" / "front.html").read_text()
    assert 'id="frontier-plot" src="data:image/png;base64,' in html


def test_the_same_spec_gives_the_same_frontier(project, frontier_run):
    from dihal.stages import run_stage

    _, configs = frontier_run
    for cfg in configs.values():
        path = project / cfg["out"] / "frontier.json"
        before = path.read_bytes()
        run_stage(project / ".dihal" / "stages" / f"frontier-{cfg['hash']}.json")
        assert path.read_bytes() == before


def test_no_frontier_leaves_the_spec_hash_and_stages_alone(project, frontier_run):
    plain = write_spec_from(BASE, project, "plain")
    res = invoke(project, "compile", str(plain))
    assert res.exit_code == 0, res.output
    plain_stages = json.loads((project / ".dihal" / "specs" / "plain.json").read_text())["stages"]
    assert not any(k.startswith("frontier-") for k in plain_stages)
    registered = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert len([k for k in registered if k.startswith("evaluate-")]) == 1, "eval.frontier is not evaluate's param"


@pytest.mark.parametrize(
    "field,value,said",
    [("temperatures", [-1], ("-1", "0")), ("steps", [0], ("0",)), ("temperatures", [], ("[]",))],
)
def test_validate_refuses_a_bad_frontier_naming_the_field(tmp_path, field, value, said):
    bad = write_spec_from({**SPEC, "eval": {**SPEC["eval"], "frontier": {**FRONTIER, field: value}}}, tmp_path, "bad")
    res = invoke(tmp_path, "validate", str(bad))
    assert res.exit_code == 2, res.output
    assert f"eval.frontier.{field}" in res.output and all(s in res.output for s in said), res.output


def test_the_planner_costs_each_frontier_stage(tmp_path):
    base = plan_json(variant(tmp_path, "q"))
    spec = variant(tmp_path, "f", eval={"frontier": {"temperatures": [0.0, 1.0], "steps": [10, 50], "n_samples": 32}})
    got = plan_json(spec)
    front = [s for s in got["stages"] if s["kind"] == "frontier"]
    assert len(front) == 2 and all(s["flops"] > 0 and s["tokens"] > 0 for s in front)
    evaluate = next(s for s in got["stages"] if s["kind"] == "evaluate")
    bridge = next(s for s in front if "points" in s["note"])
    assert bridge["flops"] > evaluate["flops"], "4 points × 32 samples at up to 50 steps outweigh 16 samples at 50"
    assert got["total"]["flops"] > base["total"]["flops"]


def test_every_c3_interface_and_seed_gets_a_frontier_stage(tmp_path):
    got = plan_json(variant(tmp_path, "c3f", base="c3.yaml", eval={"frontier": {"steps": [50]}}))
    front = [s for s in got["stages"] if s["kind"] == "frontier"]
    evaluate = [s for s in got["stages"] if s["kind"] == "evaluate"]
    assert len(evaluate) == 4 * 3 and len(front) == len(evaluate) + 1, "one per evaluate stage, plus the backbone's"
    for ev in evaluate:
        twin = next(s for s in front if s["name"].split("-")[1:-1] == ev["name"].split("-")[1:-1])
        assert twin["deps"] == ev["deps"], "a frontier stage reads what its evaluate stage reads"
    assert sum(1 for s in front if not s["deps"]) == 1, "the backbone's own reads no stage"


# Prompted continuation (bridge.prefix > 1), in the same project: Locate and the targets are shared.
PROMPT = 4


def _stage(project, kind: str, prefix: int) -> dict:
    """The one compiled `kind` stage config whose bridge clamps `prefix` positions."""
    configs = _configs(project, kind)
    found = [c for c in configs if c["params"].get("prefix", c["params"].get("bridge", {}).get("prefix")) == prefix]
    assert len(found) == 1, [c["params"] for c in configs]
    return found[0]


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def prompted_run(project, frontier_run):
    spec = write_spec_from(SPEC, project, "prompted", bridge={**SPEC["bridge"], "prefix": PROMPT})
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    return spec


def test_prompted_samples_continue_held_out_prompts_and_the_references_continue_the_same(project, prompted_run):
    import numpy as np

    evaluate = _stage(project, "evaluate", PROMPT)
    val_ids = np.load(project / evaluate["inputs"]["targets"] / "val_ids.npy")
    samples = _jsonl(project / evaluate["out"] / "samples.jsonl")
    assert len(samples) == SPEC["eval"]["n_samples"]
    for s in samples:  # the prompt is the first PROMPT tokens of a held-out block, in evaluate's order
        assert s["prompt"] == val_ids[s["index"] % len(val_ids)][:PROMPT].tolist()
        assert len(s["tokens"]) == SPEC["bridge"]["seq_len"] - PROMPT
    assert len({tuple(s["prompt"]) for s in samples}) > 1, "held-out blocks give different prompts"

    refs = _jsonl(project / _stage(project, "reference", PROMPT)["out"] / "samples.jsonl")
    greedy = [r for r in refs if r["reference"] == "backbone_greedy" and r["seed"] == 0]
    assert [r["prompt"] for r in greedy] == [s["prompt"] for s in samples], "the references continue the same prompts"
    assert len({tuple(r["tokens"]) for r in greedy}) > 1, "greedy decoding gives a text per prompt"

    # Unconditional generation (prefix 1, the first run): every prompt is the block-start token, so greedy
    # decoding is one text repeated, which is why prompted continuation is the second setting.
    plain = _jsonl(project / _stage(project, "reference", 1)["out"] / "samples.jsonl")
    plain_greedy = [r for r in plain if r["reference"] == "backbone_greedy" and r["seed"] == 0]
    assert len({tuple(r["prompt"]) for r in plain_greedy}) == 1
    assert len({tuple(r["tokens"]) for r in plain_greedy}) == 1


def test_prompted_rows_are_judged_after_the_prompt_and_kept_apart_in_the_ledger(project, prompted_run):
    n, T = SPEC["eval"]["n_samples"], SPEC["bridge"]["seq_len"]
    for prefix in (1, PROMPT):  # NLL over the generated positions only
        metrics = json.loads((project / _stage(project, "evaluate", prefix)["out"] / "metrics.json").read_text())
        assert metrics["gen_tokens"] == n * (T - prefix)
    rows = ledger_rows(
        project,
        "SELECT spec_name, count(*) FROM bridge_results_named WHERE spec_name IN ('front', 'prompted') "
        "GROUP BY spec_name ORDER BY spec_name",
    )
    assert rows == [("front", 1), ("prompted", 1)], "each setting is its own spec, hash and row"
    points = ledger_rows(
        project, "SELECT count(*) FROM frontier_points_named WHERE spec_name = 'prompted' AND interface = 'hidden'"
    )
    assert points == [(len(FRONTIER["temperatures"]) * len(FRONTIER["steps"]),)]
