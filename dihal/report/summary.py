"""The table `dihal run` prints at the end, read back from the ledger (what you see is what was stored)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dihal.ledger import store as ledger
from dihal.utils.terminal import clean, shown, text


def _f(v, fmt: str = ".4g") -> str:
    return "" if v is None else format(v, fmt)


def _mauve(value, lo, hi) -> str:
    """MAUVE with its 95% bootstrap interval, e.g. '0.41 [0.12, 0.77]'; empty where it was not measured."""
    if value is None:
        return ""
    return f"{value:.2f}" + ("" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]")


def headline(root: Path, h: str) -> str | None:
    """The answer in one line: ℓ*, how sure, and the bridge's gen PPL at ℓ* on the scale of real text."""
    _, sel = ledger.query(root, "SELECT layer, argmax_share FROM selections WHERE spec_hash = ?", [h])
    if not sel:
        return None
    layer, share = sel[0]
    line = f"ℓ* = {layer}" + (f" ({share:.0%} of resamples)" if share is not None else "")
    _, bridge = ledger.query(
        root,
        "SELECT avg(gen_ppl), avg(bridge_val_loss) FROM bridge_results WHERE spec_hash = ? AND layer = ?",
        [h, layer],
    )
    if bridge and bridge[0][0] is not None:
        ppl, loss = bridge[0]
        line += f"; bridge at ℓ*: gen PPL {ppl:.3g}"
        real = (
            ledger.query(
                root,
                "SELECT avg(gen_ppl) FROM reference_results WHERE spec_hash = ? AND reference = 'real_text'",
                [h],
            )[1]
            if _has(root, "reference_results")
            else []
        )
        if real and real[0][0]:
            line += f" = {ppl / real[0][0]:.1f}× real text ({real[0][0]:.3g})"
        line += f", val loss {_f(loss)}"
    return line


BRIDGE_LEGEND = (
    "val loss: the bridge's denoising loss on validation blocks; recovery CE / rec. acc: the upper blocks' "
    "next-token cross-entropy and accuracy from the bridge's states; gen ppl: the judge's perplexity of "
    "generated text (lower is better; see the references); MAUVE: the samples against the real continuations "
    "of the same prompts, on the judge's last hidden states (1 = indistinguishable), with a 95% bootstrap "
    "interval over samples; d-1..3: distinct n-grams; div: their product; H1: unigram entropy (nats)"
)


def print_summary(con: Console, root: Path, result, brief: bool = False) -> None:
    """The headline, the tables and where everything is; `brief` (`dihal run -q`): the headline and where."""
    h = result.spec_hash
    with ledger.one_reader(root):
        line = headline(root, h)
        if line:
            con.print(f"[bold]{shown(result.spec.name)}[/bold]: {shown(line)}", highlight=False)
        if not brief:
            _tables(con, root, result)
    n = len(result.stages_run)
    con.print(
        f"stages run this time: {n} of {len(result.plan.stages)}" + ("" if n else " (DVC: everything up to date)")
    )
    where = f"artifacts: {root / 'artifacts'}   ledger: {ledger.ledger_path(root)}   run: {result.run_id}"
    log = getattr(result, "log", None)
    if log is not None:
        log = Path(log)
        base = Path(root).resolve()
        where += f"   log: {root / log.relative_to(base) if log.is_relative_to(base) else log}"
    con.print(clean(where), markup=False, highlight=False)
    if result.report:
        con.print(f"report: {clean(result.report)}", markup=False, highlight=False)


def _tables(con: Console, root: Path, result) -> None:
    h = result.spec_hash
    _, chosen = ledger.query(root, "SELECT space FROM selections WHERE spec_hash = ?", [h])
    space = chosen[0][0] if chosen and chosen[0][0] else result.spec.geometry.space
    cols, rows = ledger.query(
        root,
        "SELECT layer, kappa, sigma, r, z_kappa, z_sigma, z_r, g, g_lo, g_hi, "
        "argmax_share, top_share_after, selected FROM layer_geometry WHERE spec_hash = ? "
        "AND space = ? ORDER BY layer",
        [h, space],
    )
    t = Table(title=text(f"{result.spec.name}: layer geometry in the {space} space (spec {h[:12]})"))
    for c in ("layer", "κ", "σ", "r", "z(κ)", "z(σ)", "z(r)", "G", "G 95%", "argmax", "top 0.1%", ""):
        t.add_column(c, justify="right")
    for layer, k, s, r, zk, zs, zr, g, lo, hi, share, top, sel in rows:
        style = "bold green" if sel else None
        interval = "" if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"
        t.add_row(
            str(layer),
            _f(k),
            _f(s),
            _f(r, ".1f"),
            _f(zk, "+.2f"),
            _f(zs, "+.2f"),
            _f(zr, "+.2f"),
            _f(g, "+.2f"),
            interval,
            _f(share, ".0%"),
            _f(top, ".1%"),
            "← ℓ*" if sel else "",
            style=style,
        )
    con.print(t)
    _selection(con, root, h)
    _variants(con, root, h, space)
    _bridge(con, root, h)
    _references(con, root, h)
    _c3(con, root, h)
    _correlations(con, root, h)


def _correlations(con: Console, root: Path, h: str) -> None:
    """C1 per geometry space, the selection's space first, each as a sentence that leads with the permutation test."""
    from dihal.analysis.verdicts import c1_verdict

    _, corr = ledger.query(
        root,
        "SELECT space, spearman_rho, spearman_lo, spearman_hi, kendall_tau, kendall_lo, "
        "kendall_hi, best_layer, selected_layer, selected_rank, spearman_p, kendall_p, "
        "resampled, n_layers FROM correlations WHERE spec_hash = ? "
        "ORDER BY NOT selection_space, space",
        [h],
    )
    for r in corr:
        con.print(clean(c1_verdict(r[0], r[1], r[2], r[3], r[10], r[13], r[12])), highlight=False, markup=False)
        rank = f"ℓ* = {r[8]} ranks {r[9]} of {r[13]} by loss" if r[9] is not None else f"ℓ* = {r[8]} was not swept"
        con.print(
            f"[dim]  Kendall τ = {r[4]:+.3f} [{r[5]:+.3f}, {r[6]:+.3f}] (p = {_f(r[11], '.3g')}); best layer "
            f"by loss {r[7]}; {rank}[/dim]",
            highlight=False,
        )


def _selection(con: Console, root: Path, h: str) -> None:
    _, sel = ledger.query(
        root,
        "SELECT rule, layer, g, argmax_share, n_boot, n_documents, block_start, "
        "outlier_rule, warning, space, confidence FROM selections WHERE spec_hash = ?",
        [h],
    )
    if not sel:
        return
    rule, layer, g, share, n_boot, n_docs, start, outliers, warning, space, sentence = sel[0]
    how = f"argmax in {share:.0%} of {n_boot} document resamples" if share is not None else "no stability bootstrap"
    con.print(
        f"ℓ* = [bold]{layer}[/bold] ({how}; rule {shown(rule)}, G = {_f(g, '+.3f')}, {shown(space)} space)",
        highlight=False,
    )
    if sentence:
        con.print(f"  {clean(sentence)}", highlight=False, markup=False)
    _, others = ledger.query(
        root,
        "SELECT g.space, g.layer, g.argmax_share FROM layer_geometry g WHERE "
        "g.spec_hash = ? AND g.space != ? AND g.space_best ORDER BY g.space",
        [h, space],
    )
    for other, o_layer, o_share in others:
        con.print(
            f"[dim]  in the {shown(other)} space ℓ* would be {o_layer}"
            + (f" (argmax in {o_share:.0%} of resamples)" if o_share is not None else "")
            + "[/dim]",
            highlight=False,
        )
    con.print(
        f"[dim]  geometry sample: {n_docs} documents, blocks start with {shown(start)}, outliers: {shown(outliers)}[/dim]",
        highlight=False,
    )
    if warning:
        con.print(f"[bold yellow]warning:[/bold yellow] {shown(warning)}", highlight=False)
    _channel_lines(con, root, h, space, layer)


def _token_list(tokens_json) -> str:
    tokens = json.loads(tokens_json) if isinstance(tokens_json, str) else (tokens_json or [])
    return ", ".join(
        f"{clean(repr(t['text']))} ×{t['count']} ({t['variance_share']:.0%} of it)"
        if t.get("text") is not None
        else f"id {t['id']} ×{t['count']}"
        for t in tokens
    )


def _channel_lines(con: Console, root: Path, h: str, space: str, layer: int) -> None:
    """The dominant raw channel at ℓ* and the deepest-reaching one, with the tokens that light them."""
    _, rows = ledger.query(
        root,
        "SELECT layer, top_channel, top_channel_share, top_channel_tokens FROM layer_geometry "
        "WHERE spec_hash = ? AND space = ? AND top_channel_share > 0.5 ORDER BY layer",
        [h, space],
    )
    if not rows:
        return
    at = [r for r in rows if r[0] == layer]
    first, last = rows[0][0], rows[-1][0]
    ch = at[0] if at else max(rows, key=lambda r: r[2])
    where = f"at ℓ* = {layer}" if at else f"at layer {ch[0]}"
    con.print(
        f"  {where}, raw channel {ch[1]} carries {ch[2]:.0%} of the variance"
        + (f" (one channel holds over half of it at layers {first}–{last})" if len(rows) > 1 else "")
        + (f"; it is lit most by {_token_list(ch[3])}" if ch[3] else "")
        + ". Standardised per channel, as the bridge sees it, it has unit variance like every other.",
        highlight=False,
        markup=False,
    )


def _variants(con: Console, root: Path, h: str, space: str) -> None:
    _, rows = ledger.query(
        root,
        "SELECT variant, layer, argmax_share, g, top_share_after, settings "
        "FROM selection_stability WHERE spec_hash = ? AND space = ? AND selected "
        "ORDER BY variant != 'main', variant",
        [h, space],
    )
    if len(rows) < 2:
        return
    t = Table(title=text(f"sensitivity: ℓ* per variant of Locate ({space} space)"))
    for c in ("variant", "changes", "ℓ*", "argmax share", "G", "top 0.1% at ℓ*"):
        t.add_column(c, justify="left" if c == "changes" else "right")
    from dihal.report.confidence import settings_lines

    for variant, layer, share, g, top, settings in rows:
        changes = "" if variant == "main" else "\n".join(settings_lines(json.loads(settings) if settings else None))
        t.add_row(
            text(variant), text(changes, newlines=True), str(layer), _f(share, ".0%"), _f(g, "+.2f"), _f(top, ".1%")
        )
    con.print(t)


def _bridge(con: Console, root: Path, h: str) -> None:
    _, rows = ledger.query(
        root,
        "SELECT layer, seed, bridge_val_loss, recovery_ce, recovery_token_acc, gen_ppl, mauve, mauve_lo, mauve_hi, "
        "distinct_1, distinct_2, distinct_3, diversity, unigram_entropy FROM bridge_results "
        "WHERE spec_hash = ? ORDER BY layer, seed",
        [h],
    )
    if not rows:
        return
    t = Table(title="bridge")
    columns = ("layer", "seed", "val loss", "recovery CE", "rec. acc", "gen ppl", "MAUVE", "d-1", "d-2", "d-3")
    for c in (*columns, "div", "H1"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r[0]), str(r[1]), *(_f(v) for v in r[2:6]), _mauve(*r[6:9]), *(_f(v) for v in r[9:]))
    con.print(t)
    con.print(f"[dim]{BRIDGE_LEGEND}[/dim]", highlight=False)
    _, samples = ledger.query(
        root,
        "SELECT layer, seed, text FROM samples WHERE spec_hash = ? AND idx < 3 ORDER BY layer, seed, idx LIMIT 6",
        [h],
    )
    for layer, seed, sample in samples:  # plain text on one line: newlines as ⏎, other control characters escaped
        one_line = " ⏎ ".join(part.strip() for part in sample[:160].splitlines())
        con.print(f"[dim]L{layer} s{seed}[/dim] {shown(one_line)}", highlight=False)


def _has(root: Path, table: str) -> bool:
    _, rows = ledger.query(root, "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
    return bool(rows[0][0])


def _references(con: Console, root: Path, h: str) -> None:
    """One line that gives the bridge's gen PPL a scale (the reference stage's rows, mean over seeds)."""
    if not _has(root, "reference_results"):
        return
    _, rows = ledger.query(
        root,
        "SELECT reference, avg(gen_ppl), avg(diversity), avg(mauve) FROM reference_results "
        "WHERE spec_hash = ? GROUP BY reference ORDER BY reference",
        [h],
    )
    if rows:
        parts = ", ".join(
            f"{ref} {_f(ppl, '.3g')} (div {_f(div, '.2f')}" + ("" if mv is None else f", MAUVE {mv:.2f}") + ")"
            for ref, ppl, div, mv in rows
        )
        con.print(f"references, gen PPL by the same judge: {clean(parts)}", highlight=False, markup=False)


def _c3(con: Console, root: Path, h: str) -> None:
    """C3: each interface over its seeds, with what it spent (only for specs with baselines)."""
    if not _has(root, "interface_results"):
        return
    _, rows = ledger.query(
        root,
        """SELECT interface, layer, count(*), avg(gen_ppl), stddev_samp(gen_ppl),
        avg(diversity), avg(mauve), avg(recovery_token_acc), avg(recovery_ce), any_value(diffusion_steps),
        any_value(denoiser_params), any_value(recovery_steps), any_value(recovery_params), bool_and(budget_matched),
        avg(train_seconds + recovery_seconds), avg(eval_seconds)
        FROM interface_results WHERE spec_hash = ? GROUP BY interface, layer
        ORDER BY interface != 'hidden', interface, layer""",
        [h],
    )
    if not any(r[0] != "hidden" for r in rows):
        return
    t = Table(title="C3: interfaces at the bridge's budget (mean over seeds)")
    for c in (
        "interface",
        "layer",
        "seeds",
        "gen ppl",
        "± sd",
        "div",
        "MAUVE",
        "rec. acc",
        "rec. CE",
        "diff. steps",
        "denoiser",
        "rec. steps",
        "rec. params",
        "matched",
        "train s",
        "eval s",
    ):
        t.add_column(c, justify="left" if c == "interface" else "right")
    for r in rows:
        t.add_row(
            text(r[0]),
            str(r[1]),
            str(r[2]),
            _f(r[3]),
            _f(r[4], ".2g"),
            _f(r[5], ".3f"),
            _f(r[6], ".2f"),
            _f(r[7], ".3f"),
            _f(r[8]),
            str(r[9]),
            f"{r[10]:,}",
            str(r[11]),
            f"{r[12]:,}",
            "yes" if r[13] else "NO",
            _f(r[14], ".0f"),
            _f(r[15], ".0f"),
        )
    con.print(t)
