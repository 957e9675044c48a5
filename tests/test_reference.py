"""The reference rows (issue 10, C3): the backbone's own samples and held-out text, judged like the bridge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dihal.cli import app
from dihal.compile.plan import plan
from dihal.spec.paths import load_project_spec
from tests.tiny import ledger_rows, save_tiny, stages_ran, write_spec_from

BASE = {
    "name": "ref",
    "backbone": {"source": "local", "id": "tiny"},
    "data": {"source": "kjv", "max_documents": 200},
    "geometry": {"seq_len": 16, "n_tokens": 512, "anchors": 64, "k": 8, "pairs": 256, "batch_size": 8},
    "bridge": {
        "seq_len": 16,
        "n_train": 32,
        "n_val": 16,
        "d_model": 32,
        "depth": 1,
        "heads": 2,
        "steps": 10,
        "warmup": 2,
        "batch_size": 8,
        "checkpoint_every": 10,
        "seeds": [0, 1],
        "prefix": 2,
    },
    "eval": {"n_samples": 4, "sampling_steps": 3, "n_boot": 20, "val_batches": 2},
}
REFERENCES = {"backbone_t1", "backbone_greedy", "real_text"}
runner = CliRunner()


def write_spec(root: Path, name: str, **changes) -> Path:
    return write_spec_from(BASE, root, name, **changes)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def project(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("refproject")
    save_tiny(root / "tiny")
    monkeypatch_module.chdir(root)
    monkeypatch_module.setenv("DIHAL_PROGRESS", "0")
    return root


@pytest.fixture(scope="module")
def first_run(project):
    spec = write_spec(project, "ref")
    result = runner.invoke(app, ["run", str(spec), "--no-report", "--project", str(project)])
    assert result.exit_code == 0, result.output
    return spec, result


def _plan(project: Path, spec_path: Path):
    spec, _ = load_project_spec(spec_path, project)
    return plan(spec, 4, project)


def _adapter(project: Path):
    from transformers import AutoModelForCausalLM

    from dihal.backbone import BackboneAdapter

    model = AutoModelForCausalLM.from_pretrained(project / "tiny").eval()
    return model, BackboneAdapter(model)


def test_a_run_records_three_references_per_bridge_seed(project, first_run):
    spec, result = first_run
    assert any(s.startswith("reference-") for s in stages_ran(result.output))
    rows = ledger_rows(
        project,
        "SELECT reference, seed, gen_ppl, gen_nll, distinct_1, distinct_2, distinct_3, "
        "diversity, unigram_entropy, n_samples, seq_len, samples_digest, run_id "
        "FROM reference_results r JOIN specs s USING (spec_hash) WHERE s.name = 'ref'",
    )
    assert {(r[0], r[1]) for r in rows} == {(ref, s) for ref in REFERENCES for s in (0, 1)} and len(rows) == 6
    for r in rows:
        assert all(math.isfinite(v) for v in r[2:9]) and r[2] > 1 and r[3] > 0, r
        assert math.isclose(r[2], math.exp(r[3]))
        assert r[9:11] == (4, 16) and len(r[11]) == 64 and r[12]
    by = {(r[0], r[1]): r for r in rows}
    assert by["backbone_t1", 0][11] != by["backbone_t1", 1][11], "each seed draws its own samples"
    runs = ledger_rows(project, "SELECT run_id FROM runs r JOIN specs s USING (spec_hash) WHERE s.name = 'ref'")
    assert {r[12] for r in rows} == {runs[-1][0]}


def test_a_run_fills_mauve_for_every_row_the_judge_scores(project, first_run):
    where = "JOIN specs s USING (spec_hash) WHERE s.name = 'ref'"
    rows = {
        "reference_results": ledger_rows(
            project, f"SELECT reference, mauve, mauve_lo, mauve_hi FROM reference_results r {where}"
        ),
        "bridge_results": ledger_rows(
            project, f"SELECT layer, mauve, mauve_lo, mauve_hi FROM bridge_results b {where}"
        ),
        "interface_results": ledger_rows(
            project, f"SELECT interface, mauve, mauve_lo, mauve_hi FROM interface_results i {where}"
        ),
    }
    assert len(rows["reference_results"]) == 6 and len(rows["bridge_results"]) == 2 == len(rows["interface_results"])
    for table, found in rows.items():
        for who, mauve, lo, hi in found:
            assert 0.0 <= lo <= mauve <= hi <= 1.0, (table, who, mauve, lo, hi)
    p = _plan(project, first_run[0])
    refs = json.loads((project / p.reference.out / "references.json").read_text())
    for r in refs:  # real_text's ceiling reads blocks the prompts are not cut from (4 of the pool of 16)
        if r["reference"] == "real_text":
            assert len(r["ceiling_blocks"]) == 4 and all(4 <= b < 16 for b in r["ceiling_blocks"])
    metrics = json.loads((project / p.evaluations[0].out / "metrics.json").read_text())
    assert {"mauve", "mauve_lo", "mauve_hi"} <= set(metrics)


def test_greedy_rows_are_the_same_for_every_seed(project, first_run):
    rows = ledger_rows(
        project,
        "SELECT seed, gen_ppl, distinct_2, samples_digest FROM reference_results "
        "WHERE reference = 'backbone_greedy' ORDER BY seed",
    )
    assert len(rows) == 2 and rows[0][1:] == rows[1][1:]
    out = _plan(project, first_run[0]).reference.out
    samples = [json.loads(line) for line in (project / out / "samples.jsonl").read_text().splitlines()]
    greedy = {
        s["seed"]: [x["tokens"] for x in samples if x["seed"] == s["seed"] and x["reference"] == "backbone_greedy"]
        for s in samples
    }
    assert greedy[0] == greedy[1] and len(greedy[0]) == 4 and all(len(t) == 16 - 2 for t in greedy[0])


def test_real_text_is_judged_on_the_targets_validation_blocks(project, first_run):
    from dihal.analysis.judge import judge

    p = _plan(project, first_run[0])
    (targets,) = p.by_kind("targets")
    val_ids = np.load(project / targets.out / "val_ids.npy")
    ref_dir = project / p.reference.out
    assert np.array_equal(np.load(ref_dir / "val_ids.npy"), val_ids), "same blocks as the targets stage"
    rows = {(r["reference"], r["seed"]): r for r in json.loads((ref_dir / "references.json").read_text())}
    samples = [json.loads(line) for line in (ref_dir / "samples.jsonl").read_text().splitlines()]
    _, ad = _adapter(project)
    picked = set()
    for seed in (0, 1):
        blocks = rows["real_text", seed]["blocks"]
        assert len(blocks) == 4 and len(set(blocks)) == 4 and all(0 <= b < len(val_ids) for b in blocks)
        picked.add(tuple(blocks))
        real = [s for s in samples if s["reference"] == "real_text" and s["seed"] == seed]
        assert [s["prompt"] + s["tokens"] for s in real] == val_ids[blocks].tolist()
        total, count, _ = judge(ad, torch.as_tensor(val_ids[blocks]).long(), 2)
        assert count == 4 * 14 and total / count == pytest.approx(rows["real_text", seed]["gen_nll"], rel=1e-5)
        # prompts are evaluate's: ids[arange(n) % len(ids), :prefix]
        t1 = [s["prompt"] for s in samples if s["reference"] == "backbone_t1" and s["seed"] == seed]
        assert t1 == val_ids[np.arange(4) % len(val_ids), :2].tolist()
    assert len(picked) == 2, "the seed picks which held-out blocks"


def test_geometry_and_training_fields_leave_the_reference_stage_alone(project, first_run):
    base = _plan(project, first_run[0]).reference
    same = [
        ("geometry__k", 4),
        ("bridge__steps", 20),
        ("bridge__d_model", 16),
        ("bridge__lr", 1e-3),
        ("eval__sampling_steps", 7),
        ("bridge__n_train", 48),
        ("bridge__layers", [1, 2, 3]),
    ]
    for key, value in same:
        assert _plan(project, write_spec(project, "ref-tmp", **{key: value})).reference.name == base.name, key
    moved = [
        ("seed", 1),
        ("bridge__seeds", [0, 1, 2]),
        ("bridge__prefix", 1),
        ("bridge__n_val", 12),
        ("bridge__seq_len", 12),
        ("eval__n_samples", 6),
    ]
    for key, value in moved:
        assert _plan(project, write_spec(project, "ref-tmp", **{key: value})).reference.name != base.name, key
    assert _plan(project, write_spec(project, "ref-tmp", bridge=None)).reference is None
    first = _plan(project, first_run[0])
    assert base.name in {s.name for s in first.summary.upstream.values()} and first.summary.name in first.targets


def test_changing_k_does_not_rerun_the_reference_stage(project, first_run):
    spec = write_spec(project, "ref-k4", geometry__k=4)
    result = runner.invoke(app, ["run", str(spec), "--no-report", "--project", str(project)])
    assert result.exit_code == 0, result.output
    kinds = [s.split("-")[0] for s in stages_ran(result.output)]
    assert kinds[:2] == ["score", "select"] and "reference" not in kinds
    rows = ledger_rows(
        project,
        "SELECT s.name, reference, seed, gen_ppl, samples_digest FROM reference_results "
        "JOIN specs s USING (spec_hash) ORDER BY reference, seed, s.name",
    )
    assert len(rows) == 12 and all(a[1:] == b[1:] for a, b in zip(rows[::2], rows[1::2]))


def test_greedy_sampling_matches_hf_generate(tmp_path):
    from dihal.stages.reference import sample_backbone

    save_tiny(tmp_path / "tiny")
    model, ad = _adapter(tmp_path)
    prompts = torch.tensor([[1, 40, 77], [1, 5, 200], [1, 9, 9]])
    ours = sample_backbone(ad, prompts, 12, greedy=True, batch=2)
    model.generation_config.eos_token_id = None  # never stop early: the reference decodes to full length
    hf = model.generate(
        prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=9, pad_token_id=0
    )
    assert ours.shape == (3, 12) and torch.equal(ours, hf)


def test_temperature_one_sampling_is_reproducible_per_seed(tmp_path):
    from dihal.stages.reference import _gen, sample_backbone

    save_tiny(tmp_path / "tiny")
    _, ad = _adapter(tmp_path)
    prompts = torch.tensor([[1, 40], [1, 5], [1, 9], [1, 77]])
    a = sample_backbone(ad, prompts, 16, generator=_gen(0, 11))
    b = sample_backbone(ad, prompts, 16, generator=_gen(0, 11))
    c = sample_backbone(ad, prompts, 16, generator=_gen(1, 11))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a[:, :2], prompts)
