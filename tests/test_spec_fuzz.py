"""`dihal validate` against generated specs: valid and invalid, nested, unicode, huge and non-finite
numbers, aliases, bombs, raw bytes. Whatever the input, validate answers with exit 0 or a spec error
(exit 2) -- never a traceback -- within a second and 200 MB, and writes nothing into the project.

The example count is `DIHAL_FUZZ_EXAMPLES` (default 1000); the run is derandomised so CI is
repeatable. The slowest and largest examples are printed (`pytest -s`) for the record.
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dihal.cli import app

EXAMPLES = int(os.environ.get("DIHAL_FUZZ_EXAMPLES", "1000"))
# A bound against runaway inputs (YAML bombs, quadratic validators), not a speed target (that is
# bench/startup.py): a valid spec's first validation imports modules under tracemalloc, 1.3 s on a busy 2-core box.
MAX_SECONDS = 10.0
MAX_BYTES = 200 * 2**20
runner = CliRunner()

# The spec's own field names, so generated specs reach deep validators and not only "unknown key".
FIELDS = {
    None: [
        "name",
        "description",
        "seed",
        "backbone",
        "data",
        "geometry",
        "select",
        "bridge",
        "eval",
        "sensitivity",
        "allow_large",
    ],
    "backbone": ["source", "id", "revision", "dtype", "device", "trust_remote_code"],
    "data": [
        "source",
        "paths",
        "dataset",
        "splits",
        "max_documents",
        "block_start",
        "block_align",
        "max_blocks_per_document",
        "text_field",
    ],
    "geometry": [
        "seq_len",
        "n_tokens",
        "batch_size",
        "layers",
        "anchors",
        "k",
        "pairs",
        "ridge",
        "outliers",
        "n_boot",
        "warn_top_share",
        "proxies",
    ],
    "select": ["rule", "layer"],
    "bridge": [
        "layers",
        "seeds",
        "seq_len",
        "n_train",
        "n_val",
        "prefix",
        "d_model",
        "depth",
        "heads",
        "time_cond",
        "objective",
        "steps",
        "batch_size",
        "lr",
        "warmup",
        "outliers",
        "checkpoint_every",
    ],
    "eval": ["t_grid", "val_batches", "recovery_t", "n_samples", "sampling_steps", "temperature", "n_boot", "top_k"],
}
WORDS = [
    "embedded",
    "local",
    "hf",
    "kjv",
    "text",
    "argmax",
    "fixed",
    "selected",
    "drop",
    "keep",
    "clip",
    "kappa",
    "sigma",
    "erank",
    "cpu",
    "cuda:0",
    "bos",
    "eos",
    "auto",
    "x0",
    "eps",
    "adaln",
    "bridge.steps",
]

numbers = st.one_of(
    st.integers(-5, 40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 2**31 - 1, 2**31, 2**63, 10**12, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e-300, 1e308, 0.5, -0.0]),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.sampled_from(WORDS), st.text(max_size=30))


def values():
    leaf = scalars
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(
                st.one_of(st.sampled_from(sum(FIELDS.values(), [])), st.text(max_size=8)), inner, max_size=5
            ),
        ),
        max_leaves=20,
    )


@st.composite
def structured(draw) -> str:
    """A spec-shaped mapping: known sections and fields with hostile or ordinary values."""
    spec: dict = {"name": draw(st.one_of(st.text(min_size=1, max_size=20), scalars))}
    for key in draw(st.lists(st.sampled_from(FIELDS[None]), max_size=6, unique=True)):
        if key in FIELDS and draw(st.booleans()):
            spec[key] = {
                f: draw(values()) for f in draw(st.lists(st.sampled_from(FIELDS[key]), max_size=5, unique=True))
            }
        else:
            spec[key] = draw(values())
    return yaml.safe_dump(spec, allow_unicode=draw(st.booleans()))


@st.composite
def bombs(draw) -> str:
    """Billion laughs of every size, some small enough to be legal, placed where a field is expected."""
    levels, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    lines = ["a0: &a0 [lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    where = draw(st.sampled_from(["name", "description", "geometry:\n  layers", "sensitivity"]))
    return "\n".join(lines) + f"\n{where}: *a{levels - 1}\n"


QUICKSTART = yaml.safe_load((Path(__file__).parents[1] / "specs" / "quickstart.yaml").read_text())


@st.composite
def mutated(draw) -> str:
    """The quickstart with a few fields changed: mostly-valid specs reach the deep validators and the
    resource checks (backbone depth, files), and some stay valid (exit 0)."""
    spec = yaml.safe_load(yaml.safe_dump(QUICKSTART))
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from([s for s in FIELDS if s]))
        fields = spec.setdefault(section, {}) if isinstance(spec.get(section), dict) else spec
        field = draw(st.sampled_from(FIELDS[section]))
        plausible = st.one_of(
            st.integers(1, 64),
            st.floats(0.01, 0.99),
            st.text(min_size=1, max_size=12),
            st.sampled_from([[3, 5, 7], [1, 2], "selected", {}, "kjv", "drop", "argmax", None]),
        )
        fields[field] = draw(st.one_of(plausible, plausible, plausible, scalars, values()))
    return yaml.safe_dump(spec, allow_unicode=True)


@st.composite
def valid(draw) -> str:
    """Specs that must pass: unicode labels, any 32-bit seed, ordinary settings (the ok path hashes them)."""
    spec = yaml.safe_load(yaml.safe_dump(QUICKSTART))
    spec["name"] = draw(st.text(min_size=1, max_size=40))
    spec["description"] = draw(st.text(max_size=200))
    spec["seed"] = draw(st.integers(0, 2**31 - 1))
    spec["geometry"]["k"] = draw(st.integers(1, 64))
    spec["geometry"]["ridge"] = draw(st.floats(1e-9, 10))
    spec["bridge"]["steps"] = draw(st.integers(51, 5000))
    if draw(st.booleans()):
        spec["select"] = {"rule": "fixed", "layer": draw(st.integers(1, 29))}
    return yaml.safe_dump(spec, allow_unicode=draw(st.booleans()))


TOKENS = [
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n",
    "  ",
    "&x ",
    "*x",
    "<<: *x\n",
    "!!binary ",
    "!!python/object ",
    "!!set ",
    "? ",
    "|\n",
    ">-\n",
    "'",
    '"',
    "#",
    ".inf",
    ".nan",
    "1e999",
    "0x1F",
    "0o17",
    "~",
    "name",
    "seed",
    "geometry",
    "bridge",
    "k",
    "2001-12-14",
    "\t",
    "\u2028",
    "\ufeff",
    "é",
    "𝔘",
    "%YAML 1.1\n",
    "---\n",
    "...",
]
raw_text = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=40).map("".join)
raw_bytes = st.binary(max_size=200)
deep = st.tuples(st.integers(1, 20_000), st.sampled_from(["[", "{a: ", "- "])).map(
    lambda t: (
        "name: x\nseed: " + t[1] * t[0]
        if t[1] != "- "
        else "name: x\nseed:\n" + "".join("  " * i + "- \n" for i in range(min(t[0], 400)))
    )
)
specs = st.one_of(
    valid().map(lambda t: ("valid", t)),
    st.one_of(mutated(), structured(), bombs(), raw_text, raw_bytes, deep).map(lambda t: ("any", t)),
)

STATS: dict[str, tuple[float, str]] = {"seconds": (0.0, ""), "bytes": (0.0, "")}
EXITS: dict[int, int] = {0: 0, 2: 0}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-project")
    # One untimed validate first: on a fresh machine (or after another test memoised another GGUF) the embedded
    # backbone's depth is read from its GGUF header once (~2 s) and memoised; the bound is for per-spec work.
    warm = tmp_path_factory.mktemp("fuzz-warm") / "quickstart.yaml"
    warm.write_text(yaml.safe_dump(QUICKSTART))
    assert runner.invoke(app, ["validate", str(warm), "--project", str(root)]).exit_code == 0
    assert listing(root) == []
    yield root
    (sec, sec_spec), (mem, mem_spec) = STATS["seconds"], STATS["bytes"]
    print(
        f"\nfuzz: {EXAMPLES} examples ({EXITS[0]} valid, {EXITS[2]} spec errors); slowest {sec * 1e3:.1f} ms ({sec_spec[:80]!r}); "
        f"largest {mem / 2**20:.1f} MiB traced ({mem_spec[:80]!r})"
    )


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(example=specs)
def test_validate_answers_every_spec_with_ok_or_a_spec_error(example, project):
    kind, spec = example
    path = project.parent / "fuzz-spec.yaml"  # outside the project: the project must stay empty
    path.write_bytes(spec if isinstance(spec, bytes) else spec.encode("utf-8", "surrogatepass"))
    before = listing(project)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = runner.invoke(app, ["validate", str(path), "--project", str(project)])
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    shown = repr(spec[:200])
    assert result.exit_code in (0, 2), f"exit {result.exit_code} for {shown}:\n{result.output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (shown, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "problem(s) in the spec" in result.output
    assert seconds < MAX_SECONDS, f"validate took {seconds:.2f} s on {shown}"
    assert peak < MAX_BYTES, f"validate allocated {peak / 2**20:.0f} MiB on {shown}"
    assert listing(project) == before, f"validate wrote into the project for {shown}"
    if kind == "valid":
        assert result.exit_code == 0, f"a valid spec was refused: {shown}\n{result.output}"
    EXITS[result.exit_code] += 1
    for key, value in (("seconds", seconds), ("bytes", peak)):
        if value > STATS[key][0]:
            STATS[key] = (value, shown)
