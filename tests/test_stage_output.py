"""What `dihal run` shows of `dvc repro`'s output, fed DVC's real lines: `stage i/n` announcements read from
the plan, DVC's advice and known library warnings kept out of the terminal but in the run log, `-q` and `-v`,
live bars on a terminal only, and stage progress as plain lines when the output is a file."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from dihal.compile.plan import plan
from dihal.execute.dvc import env, progress_style
from dihal.execute.stage_output import StageOutput, describe
from dihal.spec.schema import load_spec
from dihal.utils import progress

ROOT = Path(__file__).resolve().parent.parent
WARNING = (
    "/venv/lib/python3.11/site-packages/torch/nn/modules/module.py:1789: FutureWarning: `past_key_values` is "
    "deprecated and will be removed in version 5.40.0 for `LlamaForCausalLM.forward`. Use `cache` instead.\n"
    "  return forward_call(*args, **kwargs)\n"
)
HINTS = (
    "\nTo track the changes with git, run:\n\n\tgit add dvc.lock artifacts/train/.gitignore\n"
    "\nTo enable auto staging, run:\n\n\tdvc config core.autostage true\n"
    "Use `dvc push` to send your updates to remote storage.\n"
)


@pytest.fixture(scope="module")
def quick():
    return plan(load_spec(ROOT / "specs" / "quickstart.yaml")[0], 30)


def transcript(p) -> str:
    """DVC's output for a run that finds extract done and computes the rest, as `dvc repro` 3.x prints it."""
    first, *rest = p.stages
    out = f"Stage '{first.name}' didn't change, skipping\n"
    for st in rest:
        out += f"Running stage '{st.name}':\n> dihal stage {st.config_path}\n"
        if st.kind == "train":
            out += "  bridge: 50% (500/1,000 step), 12 s elapsed, ETA 12 s\n"
        if st.kind == "reference":
            out += WARNING + "/x/y.py:3: UserWarning: something new\n  warnings.warn(msg)\n"
        out += "Updating lock file 'dvc.lock'\n\n"
    return out + HINTS


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(p, tmp_path: Path, text: str, verbosity: str = "normal", dest=None, chunk: int = 7):
    dest = io.StringIO() if dest is None else dest
    log = tmp_path / "logs" / "run-x.log"
    shown = StageOutput(p, tmp_path, dest, log, verbosity)
    for i in range(0, len(text), chunk):  # arbitrary chunk boundaries, as a pipe delivers them
        shown.write(text[i : i + chunk])
    shown.close()
    return dest.getvalue(), log.read_text()


def test_stages_are_announced_from_the_plan_and_dvc_advice_goes_to_the_log(quick, tmp_path):
    shown, log = feed(quick, tmp_path, transcript(quick))
    names = [st.name for st in quick.stages]
    n = len(names)
    assert shown.splitlines()[:3] == [
        f"stage 1/{n} extract (29 layers): up to date",
        f"stage 2/{n} score: {names[1]}",
        f"stage 3/{n} select: {names[2]}",
    ]
    train = next(st for st in quick.stages if st.kind == "train")
    assert f"stage 5/{n} train (ℓ*, seed 0): {train.name}\n  bridge: 50% (500/1,000 step)" in shown
    for dvc_line in ("Running stage", "> dihal stage", "lock file", "git add", "autostage", "dvc push", "\n\n"):
        assert dvc_line not in shown and dvc_line in log
    assert "past_key_values" not in shown and "forward_call" not in shown and "past_key_values" in log
    assert "UserWarning: something new\n  warnings.warn(msg)\n" in shown  # an unknown warning reaches the user
    assert log.count("\n") > shown.count("\n")


def test_a_selected_layer_is_named_once_select_has_written_it(quick, tmp_path):
    sel = tmp_path / quick.select.out
    sel.mkdir(parents=True)
    (sel / "selection.json").write_text('{"layer": 22}')
    shown, _ = feed(quick, tmp_path, transcript(quick))
    assert "train (ℓ* = 22, seed 0): " in shown and "evaluate (ℓ* = 22, seed 0): " in shown


def test_sweep_and_baseline_stages_say_their_layer_seed_and_interface():
    sweep = plan(load_spec(ROOT / "specs" / "sweep.yaml")[0], 30)
    said = {describe(st) for st in sweep.stages}
    assert {"targets (ℓ = 3)", "train (ℓ = 3, seed 2)", "evaluate (ℓ = 28, seed 1)", "correlate"} <= said
    c3 = plan(load_spec(ROOT / "specs" / "c3.yaml")[0], 30)
    said = {describe(st) for st in c3.baselines}
    assert "evaluate (latent_ae, seed 0)" in said, said


def test_quiet_shows_only_warnings_and_errors(quick, tmp_path):
    text = transcript(quick) + "ERROR: failed to reproduce 'train-x': exited with 1\n"
    shown, log = feed(quick, tmp_path, text, "quiet")
    expected = "/x/y.py:3: UserWarning: something new\nERROR: failed to reproduce 'train-x': exited with 1\n"
    assert shown == expected, shown
    assert "Running stage" in log and "bridge: 50%" in log


def test_verbose_shows_dvc_raw_output_too(quick, tmp_path):
    text = transcript(quick)
    shown, log = feed(quick, tmp_path, text, "verbose")
    for dvc_line in ("Running stage '", "> dihal stage", "Updating lock file", "\tgit add dvc.lock", "dvc push"):
        assert dvc_line in shown
    assert "past_key_values" in shown and f"stage 2/{len(quick.stages)} score: " in shown
    assert log.split("\n", 1)[1] == text  # the log: a header, then everything as it came


def test_printed_data_stays_inert(quick, tmp_path):
    shown, log = feed(quick, tmp_path, "token '\x1b]0;pwned\x07\u202e' in a stage's output\n")
    assert shown == "token '\\x1b]0;pwned\\x07\\u202e' in a stage's output\n"
    assert "\x1b" not in log and "\u202e" not in log


def test_bars_stay_live_on_a_terminal_and_only_their_last_state_is_logged(quick, tmp_path):
    bar = "\r  0%|          | 0/30\r 50%|#####     | 15/30\r100%|##########| 30/30\n"
    text = f"Running stage '{quick.stages[0].name}':\n{bar}Updating lock file 'dvc.lock'\n"
    shown, log = feed(quick, tmp_path, text, dest=Terminal(), chunk=5)
    assert "\r 50%|#####     | 15/30" in shown and shown.endswith("\r100%|##########| 30/30\n")
    assert "lock file" not in shown and shown.count("| 15/30") == 1  # each state drawn once
    assert log.splitlines()[1:] == [
        f"Running stage '{quick.stages[0].name}':",
        "100%|##########| 30/30",
        "Updating lock file 'dvc.lock'",
    ]
    into_a_file, _ = feed(quick, tmp_path, text)
    assert "\r" not in into_a_file and "15/30" not in into_a_file and "30/30" in into_a_file


def test_stages_are_told_to_draw_bars_only_for_a_terminal(quick, tmp_path, monkeypatch):
    monkeypatch.delenv("DIHAL_PROGRESS", raising=False)
    assert StageOutput(quick, tmp_path, Terminal(), None).progress_style == "bar"
    assert StageOutput(quick, tmp_path, Terminal(), None, "quiet").progress_style == "lines"
    assert StageOutput(quick, tmp_path, io.StringIO(), None).progress_style == "lines"
    assert progress_style(Terminal()) == "bar" and progress_style(False) == "lines"
    assert env("lines")["DIHAL_PROGRESS"] == "lines"
    monkeypatch.setenv("DIHAL_PROGRESS", "0")  # the user's choice wins
    assert env("bar")["DIHAL_PROGRESS"] == "0"


def test_progress_as_lines_says_count_elapsed_and_eta(monkeypatch, capsys):
    monkeypatch.setenv("DIHAL_PROGRESS", "lines")
    monkeypatch.setenv("DIHAL_PROGRESS_INTERVAL", "0")
    b = progress.bar(total=4, desc="bridge", unit="step")
    for _ in range(4):
        time.sleep(0.01)
        b.update(1)
        b.set_postfix(loss="0.5")
    b.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and lines[0].startswith("  bridge: 25% (1/4 step), ") and ", ETA " in lines[0]
    assert lines[-1].startswith("  bridge: 100% (4/4 step), done in ") and lines[-1].endswith(", loss=0.5")
    assert not any(ln.startswith("  bridge: 100%") and "done" not in ln for ln in lines)  # one closing line


def test_progress_lines_are_sparse_by_default(monkeypatch, capsys):
    monkeypatch.setenv("DIHAL_PROGRESS", "lines")
    monkeypatch.delenv("DIHAL_PROGRESS_INTERVAL", raising=False)
    for _ in progress.bar(range(10_000), desc="fast"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("  fast: 100% (10,000/10,000 it), done in "), lines


def test_progress_bar_style_and_off(monkeypatch):
    monkeypatch.setenv("DIHAL_PROGRESS", "bar")
    assert not isinstance(progress.bar(total=3), progress.LineBar)
    monkeypatch.setenv("DIHAL_PROGRESS", "0")
    assert progress.bar(total=3).disable and not progress.enabled()
    monkeypatch.setenv("DIHAL_PROGRESS", "lines")
    assert isinstance(progress.bar(total=3), progress.LineBar) and progress.bar(total=3, enabled=False).disable
