"""What `dihal validate` can check cheaply, it checks: each case below once passed validate and then either
ran with a silently changed value (`seed: yes` as seed 1, `anchors: 1000` capped at the states there were)
or failed seconds into extract (an empty corpus, a model folder without weights), or never returned
(a FIFO named as the spec). Each is now exit 2 naming the field, before anything is computed or written."""

from __future__ import annotations

import os
import threading

import pytest
from typer.testing import CliRunner

from dihal.cli import app

runner = CliRunner()


def _validate(root, text: str):
    (root / "spec.yaml").write_text("name: x\n" + text)
    return runner.invoke(app, ["validate", str(root / "spec.yaml"), "--project", str(root)])


@pytest.mark.parametrize(
    "text, field, says",
    [
        ("seed: yes\n", "seed:", "YAML 1.1 reads yes/no/on/off as a boolean"),
        ("geometry: {k: on}\n", "geometry.k:", "YAML 1.1"),
        ("bridge: {seeds: [no, yes]}\n", "bridge.seeds[0]:", "YAML 1.1"),
        ("seed: true\n", "seed:", "a number, not true/false"),
        ("eval: {temperature: false}\n", "eval.temperature:", "a number, not true/false"),
        ("geometry: {n_tokens: 512, anchors: 1000}\n", "geometry.anchors:", "at most geometry.n_tokens (512)"),
        ("bridge: {n_val: 16}\neval: {val_batches: 100}\n", "eval.val_batches:", "at most bridge.n_val (16)"),
    ],
)
def test_values_that_would_run_silently_changed_are_refused(tmp_path, text, field, says):
    res = _validate(tmp_path, text)
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.split())
    assert field in flat and says in flat, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"], "nothing may be written"


def test_true_and_false_still_mean_booleans(tmp_path):
    res = _validate(tmp_path, "bridge: null\nbackbone: {trust_remote_code: false}\n")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda d: (d / "c.txt").write_text(""), "this one is empty"),
        (lambda d: os.mkfifo(d / "c.txt"), "not a FIFO"),
        (lambda d: (os.symlink(d / "loop", d / "c.txt"), os.symlink(d / "c.txt", d / "loop")), "not a symlink loop"),
        (lambda d: (d / "c.txt").write_text("In the beginning.\n\nAnd the earth.\n"), "data.paths hold 34 bytes"),
    ],
    ids=["empty", "fifo", "symlink-loop", "too-small"],
)
def test_a_corpus_that_cannot_hold_the_sample_is_refused(tmp_path, make, says):
    make(tmp_path)
    res = _validate(tmp_path, "data: {source: text, paths: [c.txt]}\n")
    assert res.exit_code == 2, res.output
    assert says in " ".join(res.output.split()), res.output


def test_a_model_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 4}')
    res = _validate(tmp_path, "backbone: {source: local, id: m}\n")
    assert res.exit_code == 2 and "backbone.id" in res.output and "this one has none" in res.output, res.output


def test_a_fifo_named_as_the_spec_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("res", runner.invoke(app, ["validate", str(fifo)])))
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "w"):
            pass
        thread.join()
        pytest.fail("validate blocked reading a FIFO")
    assert out["res"].exit_code == 2 and "not a FIFO or device" in out["res"].output, out["res"].output


@pytest.mark.parametrize("option", [["--steps", "0"], ["--temperature", "-1"], ["--n", "0"], ["--layer", "0"]])
def test_sample_options_are_validated(option):
    res = runner.invoke(app, ["sample", "specs/quickstart.yaml", *option])
    assert res.exit_code == 2, res.output


def test_a_block_start_token_outside_the_vocabulary_is_refused(tmp_path):
    from tests.tiny import make_tokenizer

    model = tmp_path / "m"
    make_tokenizer().save_pretrained(model)
    (model / "config.json").write_text(
        '{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 4}'
    )
    (model / "model.safetensors").write_bytes(b"")
    ok = _validate(tmp_path, "backbone: {source: local, id: m}\ndata: {block_start: '<s>'}\n")
    assert ok.exit_code == 0, ok.output
    bad = _validate(
        tmp_path,
        "backbone: {source: local, id: m}\ndata: {block_start: '<|nope|>'}\n"
        "sensitivity: [{name: v, data: {block_start: '<s>'}}, {name: w, data: {block_start: '[/x]'}}]\n",
    )
    assert bad.exit_code == 2, bad.output
    flat = " ".join(bad.output.split())
    assert "data.block_start: got '<|nope|>'" in flat and "sensitivity[1].data.block_start" in flat, bad.output
    assert "sensitivity[0]" not in flat
