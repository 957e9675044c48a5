"""C3 end to end on a tiny random Llama, through the CLI with real DVC and DuckDB: the bridge and the three
baselines trained at one budget, their rows in interface_results, their decoders checked on clean inputs, and
baselines that a geometry change leaves alone. This is the small version of `specs/c3.yaml` that CI runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_run_tiny import BASE, invoke
from tests.tiny import ledger_rows, stages_ran, tiny_project, write_spec_from

C3 = {
    **BASE,
    "bridge": {**BASE["bridge"], "seeds": [0, 1], "steps": 60},
    "baselines": {
        "recovery_lr": 0.02,
        "recovery_batch_tokens": 256,
        "latent_d_model": 32,
        "latent_heads": 2,
        "latent_depth": 1,
    },
}
INTERFACES = ["embedding_readout", "embedding_rounding", "hidden", "latent_ae"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    with tiny_project(tmp_path_factory.mktemp("c3")) as root:
        yield root


@pytest.fixture(scope="module")
def c3_run(project):
    spec = write_spec_from(C3, project, "c3")
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    return spec, result


def test_every_interface_gets_a_row_per_seed_with_its_budget(project, c3_run):
    rows = ledger_rows(
        project,
        """SELECT interface, seed, layer, diffusion_steps, denoiser_params, recovery_steps,
        recovery_params, budget_matched, gen_ppl, recovery_token_acc, recovery_ce, recovery_coverage
        FROM interface_results ORDER BY interface, seed""",
    )
    assert [(r[0], r[1]) for r in rows] == [(i, s) for i in INTERFACES for s in (0, 1)]
    by = {r[0]: r for r in rows}
    assert {r[3] for r in rows} == {60}, "every interface trains the denoiser for bridge.steps"
    assert len({r[4] for r in rows}) == 1, "the same denoiser parameter count for every interface"
    assert by["hidden"][5:7] == (0, 0) and by["embedding_rounding"][5:7] == (0, 0)
    assert by["embedding_readout"][5] == 60 and by["latent_ae"][5] == 60
    assert by["embedding_readout"][6] > 0 and by["latent_ae"][6] > by["embedding_readout"][6]
    assert all(r[7] for r in rows) and all(r[8] > 0 for r in rows)
    assert by["embedding_rounding"][10] is None and by["embedding_rounding"][11] is None, "rounding has no CE"
    assert by["hidden"][11] == 1.0 and 0 < by["embedding_readout"][11] <= 1
    hidden = ledger_rows(project, "SELECT layer, seed, gen_ppl FROM bridge_results ORDER BY seed")
    assert [h[2] for h in hidden] == [r[8] for r in rows if r[0] == "hidden"], "hidden rows are the bridge's"


def _train_dirs(project, name):
    cfgs = [json.loads(p.read_text()) for p in (project / ".dihal" / "stages").glob("train-*.json")]
    return [project / c["out"] for c in cfgs if (c["params"].get("interface") or {}).get("name") == name]


def test_decoders_recover_tokens_from_clean_states(project, c3_run):
    from dihal.backbone import BackboneAdapter, load_backbone
    from dihal.bridge.hybrid import DiffusionLM
    from dihal.spec.schema import BackboneSpec

    ad = BackboneAdapter(load_backbone(BackboneSpec(source="local", id=str(project / "tiny"))).model)
    for name in ("embedding_rounding", "embedding_readout", "latent_ae"):
        out = _train_dirs(project, name)[0]
        lm = DiffusionLM.load(out / "bridge.pt", ad)
        ids = torch.from_numpy(np.load(out / "train_ids.npy")).long()
        pred = lm.interface.logits(lm.interface.clean(ids)).argmax(-1)
        acc = float((pred == ids).float().mean())
        meta = json.loads((out / "meta.json").read_text())
        if name == "embedding_rounding":
            assert acc == 1.0, "rounding recovers every token from its exact embedding"
        elif name == "embedding_readout":
            assert acc >= 0.99 and meta["recovery_train_accuracy"] >= 0.99, acc
        else:
            assert acc >= 0.9, f"the tiny autoencoder reconstructs its training blocks ({acc:.3f} after 60 steps)"
        assert meta["interface"] == name and meta["diffusion_steps"] == 60


def test_a_geometry_change_reruns_no_baseline(project, c3_run):
    spec = write_spec_from(C3, project, "c3", geometry={**C3["geometry"], "k": 4})
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    ran = stages_ran(result.output)
    assert ran and not [s for s in ran if any(i in s for i in ("rounding", "readout", "latent"))], ran
