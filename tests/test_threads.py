"""A stage's thread count follows what it was given (issue 22): DIHAL_THREADS, the executor's num_cpus, else torch's default."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dihal.utils.threads import BLAS_VARS, ENV_CPUS, ENV_THREADS, requested, stage_env


def test_the_explicit_count_wins_then_the_granted_cpus_then_torch():
    assert requested({ENV_THREADS: "3", ENV_CPUS: "1"}) == (3, ENV_THREADS)
    assert requested({ENV_CPUS: "2"}) == (2, "executor num_cpus")
    assert requested({ENV_CPUS: "0.5"})[0] == 1 and requested({ENV_CPUS: "0"})[0] == 1
    assert requested({})[0] is None


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_count_is_an_error_that_names_the_variable(bad):
    with pytest.raises(ValueError, match=ENV_THREADS):
        requested({ENV_THREADS: bad})


def test_the_stage_environment_sets_every_blas_pool():
    env = stage_env(2.0, {})
    assert env[ENV_CPUS] == "2" and all(env[v] == "2" for v in BLAS_VARS)
    assert all(v == "4" for k, v in stage_env(1.0, {ENV_THREADS: "4"}).items() if k in BLAS_VARS)


def test_a_stage_process_applies_the_count_before_it_computes():
    code = "from dihal.utils.threads import apply; import json; print(json.dumps(apply()))"
    env = {**os.environ, **stage_env(1.0, {})}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(got.stdout) == {"threads": 1, "threads_from": "executor num_cpus"}


def test_stages_wait_passively_unless_the_user_chose_otherwise(monkeypatch):
    from dihal.execute.dvc import env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert env()["OMP_WAIT_POLICY"] == "PASSIVE"  # bench/contention.py: spinning threads lose ~6x beside a competitor
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert env()["OMP_WAIT_POLICY"] == "ACTIVE"
