"""What every dihal command shares: the two consoles, exit codes, the spec and project options, and how an
error reaches the terminal (always as data: `dihal.utils.terminal`)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from dihal.spec.errors import SpecError
from dihal.utils.terminal import clean, console

out = console()
err = console(stderr=True)
EXIT_SPEC = 2
EXIT_QUEUED = 75  # EX_TEMPFAIL: the run's results are on disk, its ledger rows wait in ledger/pending/

SpecArg = typer.Argument(..., exists=False, help="Path to a YAML experiment spec.")
RootOpt = typer.Option(
    Path("."), "--project", "-C", help="Project root: holds dvc.yaml, ledger/, reports/, artifacts/."
)
SetOpt = typer.Option(
    None,
    "--set",
    "-S",
    help="Override a spec field, Hydra-style: -S bridge.steps=100 (the value is YAML; repeatable). "
    "The result is a new spec named <name>+bridge.steps=100 with its own hash.",
)
MultiOpt = typer.Option(
    False, "--multirun", "-m", help="With -S key=a,b,c: one spec per combination of the comma-separated values."
)


def error(e: BaseException) -> None:
    """An error's message on stderr, in red, printed as data (it may quote names, paths, tokens)."""
    err.print(clean(e, newlines=True), style="red", highlight=False, markup=False)


@contextmanager
def project_state():
    """A damaged or unwritable project file (`dihal.utils.state`): its one-line message and EXIT_STATE."""
    from dihal.utils.state import EXIT_STATE, ProjectStateError

    try:
        yield
    except ProjectStateError as e:
        error(e)
        raise typer.Exit(EXIT_STATE) from None


def fail_spec(e: SpecError) -> None:
    """Every problem of a refused spec, one per line, and exit 2 (before any compute starts)."""
    err.print(clean(e.render(), newlines=True), markup=False, highlight=False)
    raise typer.Exit(EXIT_SPEC)
