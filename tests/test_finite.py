"""Non-finite result metrics are never `succeeded`: a stage fails naming the metric, and so does the ingest.

Found: `eval.t_grid: []` averaged the validation loss over nothing, and the run was recorded as succeeded with
bridge_val_loss = NaN. The rule covers what a run reports as its result (losses, perplexity, recovery, G, the
correlations); diagnostics that may be undefined (a proxy, an interval with ties) are not checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from dihal.ledger import ingest
from dihal.stages.common import RESULT_METRICS, NonFiniteMetricError, StageConfig, check_finite
from tests.tiny import save_tiny

SPEC = {
    "name": "finite",
    "backbone": {"source": "local", "id": "tiny"},
    "data": {"source": "kjv", "max_documents": 200},
    "geometry": {"seq_len": 16, "n_tokens": 512, "anchors": 64, "k": 8, "pairs": 256, "batch_size": 8, "n_boot": 0},
    "bridge": {
        "seq_len": 16,
        "n_train": 32,
        "n_val": 16,
        "d_model": 16,
        "depth": 1,
        "heads": 2,
        "steps": 10,
        "warmup": 2,
        "batch_size": 8,
        "checkpoint_every": 10,
    },
    "eval": {"n_samples": 2, "sampling_steps": 3, "n_boot": 20, "val_batches": 2},
}


def test_a_nan_or_inf_metric_is_named_with_its_value():
    metrics = {
        "bridge_val_loss": math.nan,
        "gen_ppl": math.inf,
        "recovery_ce": 5.4,
        "val_batch_losses": [0.9, math.nan],
    }
    with pytest.raises(NonFiniteMetricError) as info:
        check_finite("stage evaluate-L03-s0-26c8db07", metrics, RESULT_METRICS["evaluate"])
    msg = str(info.value)
    assert msg.startswith("stage evaluate-L03-s0-26c8db07: ")
    assert "bridge_val_loss = nan" in msg and "gen_ppl = inf" in msg and "val_batch_losses[1] = nan" in msg
    assert "recovery_ce" not in msg


def test_finite_numbers_none_and_unlisted_diagnostics_pass():
    finite = {"bridge_val_loss": 0.9, "val_batch_losses": [0.8, 1.0], "gen_ppl": 170.0}
    check_finite("x", finite, RESULT_METRICS["evaluate"])
    check_finite("x", {"score": None}, RESULT_METRICS["select"])  # a fixed ℓ outside the candidates has no G
    check_finite("x", {"spearman_rho": -0.5, "kendall_tau": -0.3, "kendall_lo": math.nan}, RESULT_METRICS["correlate"])


def test_ingest_rows_with_a_nan_headline_metric_are_refused():
    rows = {
        "bridge_results": [{"spec_hash": "h", "layer": 3, "seed": 0, "bridge_val_loss": math.nan}],
        "samples": [{"spec_hash": "h", "layer": 3, "seed": 0, "idx": 0, "text": "x"}],
    }
    with pytest.raises(NonFiniteMetricError, match=r"ingest bridge_results \(layer 3, seed 0\).*bridge_val_loss = nan"):
        ingest.check_rows(rows)
    ok = {"correlations": [{"spearman_rho": 0.5, "kendall_tau": 0.3, "kendall_lo": math.nan, "spearman_p": None}]}
    assert ingest.check_rows(ok) is ok


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real one-layer run (no report), in a subprocess with the project as its working directory."""
    root = tmp_path_factory.mktemp("finite")
    save_tiny(root / "tiny")
    (root / "finite.yaml").write_text(yaml.safe_dump(SPEC))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIHAL_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "dihal", "run", "finite.yaml", "--no-report"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_an_evaluate_stage_whose_validation_loss_is_nan_fails_naming_it(tiny_run, tmp_path, monkeypatch):
    """The real evaluate stage on the real bridge, with the empty t grid that once gave NaN (the spec now
    refuses it, so the frozen stage config is changed in memory): the stage raises before writing metrics."""
    from dihal.stages import evaluate

    monkeypatch.chdir(tiny_run)
    config = next((tiny_run / ".dihal" / "stages").glob("evaluate-*.json"))
    cfg = StageConfig.read(config)
    cfg.params["eval"]["t_grid"] = []
    cfg.out = tmp_path / "evaluate-out"
    cfg.results = {"metrics": str(tmp_path / "metrics" / "evaluate-L01-s0-test.json")}
    with pytest.raises(NonFiniteMetricError) as info:
        evaluate.run(cfg)
    msg = str(info.value)
    assert "stage evaluate-L01-s0-test" in msg and "bridge_val_loss = nan" in msg
    assert not (cfg.out / "metrics.json").exists() and not (tmp_path / "metrics").exists()


def test_a_run_whose_stage_files_hold_a_nan_is_recorded_failed(tiny_run, monkeypatch):
    """A stage that wrote a NaN loss (older code, or a bug past the stage check): the ingest refuses the rows and
    the run is logged `failed` with the metric named. `dvc repro` is replaced by a function that writes that file
    (real DVC would see the edited output and recompute it)."""
    import dihal.execute.dvc
    import dihal.execute.runner
    from dihal.compile.plan import plan
    from dihal.ledger import store as ledger
    from dihal.spec.paths import load_project_spec

    spec, _ = load_project_spec(tiny_run / "finite.yaml", tiny_run)
    stage = plan(spec, 4, tiny_run).evaluations[0]
    metrics_path = tiny_run / stage.out / "metrics.json"
    assert metrics_path.exists(), "the plan names the stages the run computed"
    good = metrics_path.read_text()

    def write_metrics(text: str) -> None:
        """As the stage would: the file (not written through: it may be a link into DVC's cache), then the
        output's manifest where this dihal keeps one (dihal.stages.manifest: outputs changed afterwards are refused)."""
        metrics_path.unlink(missing_ok=True)
        metrics_path.write_text(text)
        try:
            from dihal.stages import manifest
        except ImportError:
            return
        manifest.write(tiny_run / stage.out, stage.kind, stage.hash)

    def repro_writing_nan(targets, root, echo=None):
        write_metrics(json.dumps({**json.loads(good), "bridge_val_loss": math.nan}, allow_nan=True))
        return 0, "", []

    monkeypatch.setattr(dihal.execute.dvc, "dvc_repro", repro_writing_nan)
    try:
        named = r"ingest bridge_results \(layer \d+, seed 0\): .*bridge_val_loss = nan"
        with pytest.raises(dihal.execute.runner.RunFailed, match=named):
            dihal.execute.runner.run_spec(tiny_run / "finite.yaml", tiny_run, echo=False)
    finally:
        write_metrics(good)
    statuses = ledger.query(tiny_run, "SELECT status, error FROM runs ORDER BY started_at")[1]
    assert [s for s, _ in statuses] == ["succeeded", "failed"] and "bridge_val_loss = nan" in statuses[-1][1]
    ((kept,),) = ledger.query(tiny_run, "SELECT bridge_val_loss FROM bridge_results")[1]
    assert kept == json.loads(good)["bridge_val_loss"], "the earlier, finite result is kept"
