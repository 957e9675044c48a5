"""Generated damage to every file dihal reads back from a project, and generated `ledger sql` input.

For each state file (the spec registry, `dvc.yaml`, a queued run, a spec record, the run log) hypothesis
writes truncations, garbage and valid JSON/YAML of the wrong shape, and the command that reads the file must
end with a message: exit 0, or a documented non-zero code with no traceback. For `ledger sql` any text must
come back as rows or as a LedgerError within its time limit. The example count is DIHAL_FUZZ_EXAMPLES (the
spec fuzz test's variable), 60 by default here since each example runs a real command.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dihal.cli import app
from dihal.ledger import store as ledger
from dihal.ledger.console import run_query
from dihal.utils.state import EXIT_STATE

EXAMPLES = int(os.environ.get("DIHAL_FUZZ_EXAMPLES", "60"))
SPEC = "name: fuzz\ngeometry: {layers: [1, 2, 3], n_tokens: 256, anchors: 128}\n"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def damage(original: bytes):
    """Truncations of the real file, arbitrary bytes, and well-formed JSON of any shape."""
    return st.one_of(
        st.integers(0, max(0, len(original) - 1)).map(lambda n: original[:n]),
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "spec.yaml").write_text(SPEC)
    res = CliRunner().invoke(app, ["compile", str(root / "spec.yaml"), "-C", str(root)])
    assert res.exit_code == 0, res.output
    with ledger.writer(root) as con:
        con.execute("INSERT INTO runs (run_id, status) VALUES ('r1', 'succeeded')")
    (root / "ledger" / "runs.jsonl").write_text(json.dumps({"run_id": "r1", "spec_hash": "h", "status": "ok"}) + "\n")
    (root / "ledger" / "specs").mkdir(exist_ok=True)
    (root / "ledger" / "specs" / ("h" * 64 + ".json")).write_text(json.dumps({"spec_hash": "h" * 64}))
    (root / "ledger" / "pending").mkdir(exist_ok=True)
    (root / "ledger" / "pending" / "q1.json").write_text(json.dumps({"run": {"run_id": "q1"}}))
    return root


def _registry(root):
    return next((root / ".dihal" / "specs").glob("*.json"))


# (which file, the command that reads it, exit codes that are a clean answer)
TARGETS = {
    "registry": (_registry, lambda r: ["compile", str(r / "spec.yaml"), "-C", str(r)], {0, EXIT_STATE}),
    "dvc.yaml": (lambda r: r / "dvc.yaml", lambda r: ["compile", str(r / "spec.yaml"), "-C", str(r)], {0, EXIT_STATE}),
    "runs.jsonl": (lambda r: r / "ledger" / "runs.jsonl", lambda r: ["ledger", "rebuild", "-C", str(r)], {0, 1}),
    "spec record": (
        lambda r: next((r / "ledger" / "specs").glob("*.json")),
        lambda r: ["ledger", "rebuild", "-C", str(r)],
        {0, 1},
    ),
    "pending run": (
        lambda r: r / "ledger" / "pending" / "q1.json",
        lambda r: ["ledger", "replay", "-C", str(r)],
        {0, 1},
    ),
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_damaged_state_file_gets_a_message_not_a_traceback(project, tmp_path_factory, target):
    where, command, clean_exits = TARGETS[target]
    original = where(project).read_bytes()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(content=damage(original))
    def check(content):
        root = tmp_path_factory.mktemp("damaged")
        shutil.rmtree(root)
        shutil.copytree(project, root)
        where(root).write_bytes(content)
        res = CliRunner().invoke(app, command(root))
        assert res.exit_code in clean_exits, (content, res.output, res.exception)
        assert res.exception is None or isinstance(res.exception, SystemExit), (content, res.exception)
        assert "Traceback" not in res.output
        shutil.rmtree(root, ignore_errors=True)

    check()


@settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    sql=st.one_of(
        st.text(max_size=80),
        st.builds(
            lambda a, b: f"SELECT {a} FROM {b}",
            st.sampled_from(["*", "count(*)", "run_id", "'x'", "1/0", "NULL", "[1,2]", "'\\x1b[2J'"]),
            st.sampled_from(["runs", "specs", "range(10)", "nowhere", "read_csv('x')", "runs, runs, runs"]),
        ),
    )
)
def test_any_text_given_to_ledger_sql_is_rows_or_a_message_within_the_time_limit(project, sql):
    started = time.monotonic()
    try:
        answer = run_query(project, sql, timeout=2, max_rows=50)
        assert len(answer.rows) <= 50
    except ledger.LedgerError:
        pass
    assert time.monotonic() - started < 30
