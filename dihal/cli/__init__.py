"""The `dihal` command line. Each command is a small typed function (typer)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

from dihal.cli.common import (
    EXIT_SPEC,
    MultiOpt,
    RootOpt,
    SetOpt,
    SpecArg,
    err,
    error,
    out,
    project_state,
)
from dihal.cli.ledger import ledger_app, ledger_runs
from dihal.cli.loading import checked, compile_one, load_checked, variants
from dihal.cli.run import run
from dihal.spec.errors import SpecError
from dihal.utils.terminal import clean, shown

app = typer.Typer(
    help="DiHAL experiments from one YAML spec: locate the most diffusion-friendly layer of a causal LM, "
    "replace the blocks below it with a diffusion bridge, and record everything in a DuckDB ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(ledger_app, name="ledger")
# The first thing a user types after a run; the same command as `dihal ledger runs`.
app.command("runs", help="List the latest runs (the same as `dihal ledger runs`).")(ledger_runs)


def _version(value: bool) -> None:
    if value:
        from dihal import __version__

        out.print(f"dihal {__version__}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print dihal's version and exit."
    ),
) -> None:
    """DiHAL experiments from one YAML spec (see `dihal COMMAND --help`)."""


@app.command()
def validate(
    spec_paths: list[Path] = typer.Argument(..., help="YAML experiment specs (any number; `specs/*.yaml` works)."),
    overrides: list[str] = SetOpt,
    multirun: bool = MultiOpt,
    project: Path = RootOpt,
) -> None:
    """Check specs (schema, files, layers against the backbone's depth) without computing anything."""
    failed = 0
    sets_list = variants(overrides, multirun)
    for spec_path in spec_paths:
        for sets in sets_list:
            notes: list[str] = []
            try:
                spec, depth, h = checked(spec_path, project, notes, sets)
            except SpecError as e:
                err.print(clean(e.render(), newlines=True), markup=False, highlight=False)
                failed += 1
                continue
            depth_note = (
                f"backbone has {depth} blocks"
                if depth
                else "layer numbers not checked against the backbone (its config is not available offline)"
            )
            named = f" ({shown(spec.name)})" if sets else ""
            out.print(
                f"[green]ok[/green] {shown(spec_path)}{named}: spec hash {h}; {depth_note}",
                highlight=False,
                soft_wrap=True,
            )
            for note in notes:
                out.print(f"[yellow]note[/yellow]: {shown(note)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_SPEC)


@app.command("compile")
def compile_cmd(
    spec_path: Path = SpecArg, overrides: list[str] = SetOpt, multirun: bool = MultiOpt, project: Path = RootOpt
) -> None:
    """Write the spec's stages into the project's dvc.yaml (no compute); `dvc repro` can then run them."""
    for sets in variants(overrides, multirun):
        spec, plan = compile_one(spec_path, project, sets)
        if sets:
            out.print(f"# {clean(spec.name)}", highlight=False, markup=False)
        for st in plan.stages:
            out.print(f"{st.name:<32} → {clean(st.out)}", highlight=False, markup=False)


app.command("run")(run)


@app.command()
def gc(
    keep: list[str] = typer.Option(
        None, "--keep", help="Keep only these specs (names or spec files); unregister every other one."
    ),
    drop: list[str] = typer.Option(None, "--drop", help="Unregister these specs (names or spec files)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; change nothing."),
    project: Path = RootOpt,
) -> None:
    """Remove the stages and artifacts no registered spec uses (unregistering specs first with --keep/--drop)."""
    from filelock import FileLock

    from dihal.compile.project import gc as collect
    from dihal.compile.project import registered
    from dihal.utils.state import unwritable

    with project_state():
        try:
            (project / ".dihal").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise unwritable(project, e) from None
        with FileLock(str(project / ".dihal" / "dvc.yaml.lock")):
            try:
                res = collect(project, keep=keep or None, drop=drop or [], dry_run=dry_run)
            except ValueError as e:
                error(e)
                raise typer.Exit(EXIT_SPEC) from None
    verb = "would remove" if dry_run else "removed"
    for what, items in (
        ("spec", res.unregistered),
        ("stage", res.stages),
        ("artifact", res.artifacts),
        ("stage config", res.configs),
    ):
        for item in items:
            out.print(f"{verb} {what} {clean(item)}", highlight=False, soft_wrap=True, markup=False)
    if res.dvc_gc:
        err.print(clean(res.dvc_gc, newlines=True), style="yellow", highlight=False, markup=False)
    with project_state():
        kept = [r["name"] for r in registered(project)]
    out.print(
        f"registered: {', '.join(clean(k) for k in kept) or 'none'}; "
        f"{len(res.stages)} stage(s), {len(res.artifacts)} artifact dir(s) {verb}",
        highlight=False,
        markup=False,
    )


@app.command(hidden=True)
def stage(config: Path = typer.Argument(..., help="A stage config under .dihal/stages/.")) -> None:
    """Run one compiled stage (what dvc.yaml's commands call). A failure is one line on stderr, its traceback
    in `.dihal/logs/<stage>.log`; an interrupt propagates as it came (`dvc repro` and the runner act on it)."""
    from dihal.execute import zygote

    code = zygote.delegate(["dihal", "stage", str(config)])  # under `dihal run`: a warm fork runs it
    if code is not None:
        raise typer.Exit(code)
    from dihal.execute.stage_log import failure_line
    from dihal.stages import run_stage

    try:
        run_stage(config)
    except Exception as e:
        print(clean(failure_line(config, e)), file=sys.stderr, flush=True)
        raise typer.Exit(1) from None


@app.command()
def sample(
    spec_path: Path = SpecArg,
    n: int = typer.Option(4, "--n", min=1, help="Number of samples."),
    prompt: str = typer.Option("", help="Text whose true layer-ℓ states are clamped as the prefix."),
    seed: int = typer.Option(0, min=0, help="Sampling seed."),
    steps: int | None = typer.Option(None, min=1, help="DDIM steps (default: the spec's eval.sampling_steps)."),
    temperature: float | None = typer.Option(None, min=0.0, help="0 = argmax (default: the spec's eval.temperature)."),
    layer: int | None = typer.Option(None, min=1, help="Which trained layer to sample from (sweeps; default ℓ*)."),
    overrides: list[str] = SetOpt,
    project: Path = RootOpt,
) -> None:
    """Generate text with the hybrid (bridge + retained upper blocks + final norm + LM head) of a run spec."""
    from dihal.execute.sample import SampleError, sample_texts

    spec, depth, _ = load_checked(spec_path, project, None, overrides)
    try:
        texts = sample_texts(
            spec, project, depth, n=n, prompt=prompt, seed=seed, steps=steps, temperature=temperature, layer=layer
        )
    except SampleError as e:
        error(e)
        raise typer.Exit(1) from None
    for i, generated in enumerate(texts):
        out.print(f"[bold]#{i}[/bold] {shown(prompt)}[cyan]{shown(generated)}[/cyan]", highlight=False)


@app.command("report")
def report_cmd(spec_path: Path = SpecArg, overrides: list[str] = SetOpt, project: Path = RootOpt) -> None:
    """Render reports/<name>.html for a spec already run (with the same -S overrides), and refresh reports/index.html."""
    from dihal.ledger.store import LedgerError
    from dihal.report import write_reports

    _, _, h = load_checked(spec_path, project, None, overrides)
    try:
        path = write_reports(project, h)
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    out.print(f"wrote {clean(path)}", highlight=False, markup=False)


@app.command()
def compare(
    specs: list[str] = typer.Argument(..., help="Spec names (the latest run under each) or spec hash prefixes."),
    project: Path = RootOpt,
) -> None:
    """Specs' headline numbers side by side (ℓ*, its share, G, the bridge at ℓ*, real text, C1), from the ledger."""
    from rich.table import Table

    from dihal.ledger.store import LedgerError
    from dihal.report.compare import compare as collect
    from dihal.utils.terminal import text

    try:
        names, rows = collect(project, specs)
    except LedgerError as e:
        error(e)
        raise typer.Exit(1) from None
    t = Table()
    t.add_column("")
    for name in names:
        t.add_column(text(name), justify="right")
    for label, values in rows:
        cells = ["—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in values]
        t.add_row(label, *(text(c) for c in cells))
    out.print(t)


class Gpu(str, Enum):
    h100 = "h100"
    a100 = "a100"
    l4 = "l4"


class PlanFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def plan(
    spec_path: Path = SpecArg,
    gpu: Gpu | None = typer.Option(
        None,
        "--gpu",
        help="Estimate wall time on this GPU class (datasheet peak × utilisation). Default: for a spec whose "
        "backbone.device is cuda, this machine's GPU when nvidia-smi names a known class, else an H100; otherwise "
        "this machine's CPU, from a quick matmul benchmark.",
    ),
    cpu: bool = typer.Option(False, "--cpu", help="Cost on this machine's CPU even when the spec asks for cuda."),
    workers: int = typer.Option(1, "--workers", min=1, help="Workers running independent stages in parallel."),
    utilisation: float | None = typer.Option(
        None,
        "--utilisation",
        min=0.01,
        max=1.0,
        help="Share of peak sustained (default 0.4 on a GPU, 0.5 of the measured matmul rate here).",
    ),
    fmt: PlanFormat = typer.Option(PlanFormat.table, "--format", "-f"),
    overrides: list[str] = SetOpt,
    project: Path = RootOpt,
) -> None:
    """Estimate tokens, FLOPs, memory, disk and wall time per stage of a spec, without loading weights."""
    from dihal.cost import CostError, estimate

    spec, _, _ = load_checked(spec_path, project, None, overrides)
    try:
        if cpu and gpu:
            raise CostError("--cpu and --gpu name two machines: give one")
        est = estimate(spec, project, "cpu" if cpu else (gpu.value if gpu else None), workers, utilisation)
    except CostError as e:
        error(e)
        raise typer.Exit(1) from None
    if fmt is PlanFormat.json:
        sys.stdout.write(json.dumps(est.as_dict(), indent=2) + "\n")
    else:
        from dihal.cost.render import print_plan

        print_plan(out, est)


if __name__ == "__main__":  # pragma: no cover
    app()
