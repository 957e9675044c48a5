"""The table `dihal run` prints at the end, read back from the ledger (what you see is what was stored)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dihal import ledger


def _f(v, fmt: str = ".4g") -> str:
    return "" if v is None else format(v, fmt)


def print_summary(con: Console, root: Path, result) -> None:
    h = result.spec_hash
    cols, rows = ledger.query(root, "SELECT layer, kappa, sigma, erank, z_kappa, z_sigma, z_erank, score, g_lo, g_hi, "
                                    "argmax_share, top_share_after, selected FROM layer_geometry WHERE spec_hash = ? "
                                    "ORDER BY layer", [h])  # fmt: skip
    t = Table(title=f"{result.spec.name}: layer geometry (spec {h[:12]})")
    for c in ("layer", "κ", "σ", "r", "z(κ)", "z(σ)", "z(r)", "G", "G 95%", "argmax", "top 0.1%", ""):
        t.add_column(c, justify="right")
    for layer, k, s, r, zk, zs, zr, g, lo, hi, share, top, sel in rows:
        style = "bold green" if sel else None
        interval = "" if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"
        t.add_row(str(layer), _f(k), _f(s), _f(r, ".1f"), _f(zk, "+.2f"), _f(zs, "+.2f"), _f(zr, "+.2f"),
                  _f(g, "+.2f"), interval, _f(share, ".0%"), _f(top, ".1%"), "← ℓ*" if sel else "", style=style)  # fmt: skip
    con.print(t)
    _selection(con, root, h)
    _variants(con, root, h)
    _bridge(con, root, h)
    _references(con, root, h)
    _c3(con, root, h)
    _, corr = ledger.query(root, "SELECT spearman_rho, spearman_lo, spearman_hi, kendall_tau, kendall_lo, kendall_hi, "
                                 "best_layer, selected_rank, spearman_p, kendall_p, resampled FROM correlations "
                                 "WHERE spec_hash = ?", [h])  # fmt: skip
    if corr:
        r = corr[0]
        con.print(f"C1: Spearman ρ(G, loss) = {r[0]:+.3f} [{r[1]:+.3f}, {r[2]:+.3f}] (permutation p = {_f(r[8], '.3g')}), "
                  f"Kendall τ = {r[3]:+.3f} [{r[4]:+.3f}, {r[5]:+.3f}] (p = {_f(r[9], '.3g')}); best layer by loss "
                  f"{r[6]}; ℓ* ranks {r[7]}", highlight=False)  # fmt: skip
        if r[10]:
            con.print(f"[dim]  the intervals resample {r[10]}[/dim]", highlight=False)
    n = len(result.stages_run)
    con.print(f"stages run this time: {n} of {len(result.plan.stages)}"
              + ("" if n else " (DVC: everything up to date)"))  # fmt: skip
    con.print(f"artifacts: {root / 'artifacts'}   ledger: {ledger.ledger_path(root)}   run: {result.run_id}")
    if result.report:
        con.print(f"report: {result.report}")


def _selection(con: Console, root: Path, h: str) -> None:
    _, sel = ledger.query(root, "SELECT rule, layer, score, argmax_share, n_boot, n_documents, block_start, "
                                "outlier_rule, warning FROM selections WHERE spec_hash = ?", [h])  # fmt: skip
    if not sel:
        return
    rule, layer, g, share, n_boot, n_docs, start, outliers, warning = sel[0]
    how = f"argmax in {share:.0%} of {n_boot} document resamples" if share is not None else "no stability bootstrap"
    con.print(f"ℓ* = [bold]{layer}[/bold] ({how}; rule {rule}, G = {_f(g, '+.3f')})", highlight=False)
    con.print(f"[dim]  geometry sample: {n_docs} documents, blocks start with {start}, outliers: {outliers}[/dim]",
              highlight=False)  # fmt: skip
    if warning:
        con.print(f"[bold yellow]warning:[/bold yellow] {warning}", highlight=False)
    _, top = ledger.query(root, "SELECT top_channel, top_channel_share FROM layer_geometry WHERE spec_hash = ? AND "
                                "layer = ?", [h, layer])  # fmt: skip
    if top and top[0][1] is not None and top[0][1] > 0.5:
        con.print(f"[dim]  at ℓ*, channel {top[0][0]} carries {top[0][1]:.0%} of the variance (a massive activation "
                  "shared by many tokens; see the report's massive-activation panel)[/dim]", highlight=False)  # fmt: skip


def _variants(con: Console, root: Path, h: str) -> None:
    _, rows = ledger.query(root, "SELECT variant, layer, argmax_share, score, top_share_after, settings "
                                 "FROM selection_stability WHERE spec_hash = ? AND selected ORDER BY variant != 'main', "
                                 "variant", [h])  # fmt: skip
    if len(rows) < 2:
        return
    t = Table(title="sensitivity: ℓ* per variant of Locate")
    for c in ("variant", "changes", "ℓ*", "argmax share", "G", "top 0.1% at ℓ*"):
        t.add_column(c, justify="left" if c == "changes" else "right")
    from dihal.report.trust import settings_lines

    for variant, layer, share, g, top, settings in rows:
        changes = "" if variant == "main" else "\n".join(settings_lines(json.loads(settings) if settings else None))
        t.add_row(variant, changes, str(layer), _f(share, ".0%"), _f(g, "+.2f"), _f(top, ".1%"))
    con.print(t)


def _bridge(con: Console, root: Path, h: str) -> None:
    _, rows = ledger.query(root, "SELECT layer, seed, bridge_val_loss, recovery_ce, recovery_token_acc, gen_ppl, "
                                 "distinct_1, distinct_2, distinct_3, diversity, unigram_entropy FROM bridge_results "
                                 "WHERE spec_hash = ? ORDER BY layer, seed", [h])  # fmt: skip
    if not rows:
        return
    t = Table(title="bridge")
    for c in ("layer", "seed", "val loss", "recovery CE", "rec. acc", "gen ppl", "d-1", "d-2", "d-3", "div", "H1"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r[0]), str(r[1]), *(_f(v) for v in r[2:]))
    con.print(t)
    _, samples = ledger.query(root, "SELECT layer, seed, text FROM samples WHERE spec_hash = ? AND idx < 3 "
                                    "ORDER BY layer, seed, idx LIMIT 6", [h])  # fmt: skip
    for layer, seed, text in samples:
        con.print(f"[dim]L{layer} s{seed}[/dim] {text[:160]!r}", highlight=False)


def _has(root: Path, table: str) -> bool:
    _, rows = ledger.query(root, "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
    return bool(rows[0][0])


def _references(con: Console, root: Path, h: str) -> None:
    """One line that gives the bridge's gen PPL a scale (the reference stage's rows, mean over seeds)."""
    if not _has(root, "reference_results"):
        return
    _, rows = ledger.query(root, "SELECT reference, avg(gen_ppl), avg(diversity) FROM reference_results "
                                 "WHERE spec_hash = ? GROUP BY reference ORDER BY reference", [h])  # fmt: skip
    if rows:
        parts = ", ".join(f"{ref} {_f(ppl, '.3g')} (div {_f(div, '.2f')})" for ref, ppl, div in rows)
        con.print(f"references, gen PPL by the same judge: {parts}", highlight=False)


def _c3(con: Console, root: Path, h: str) -> None:
    """C3: each interface over its seeds, with what it spent (only for specs with baselines)."""
    if not _has(root, "interface_results"):
        return
    _, rows = ledger.query(root, """SELECT interface, layer, count(*), avg(gen_ppl), stddev_samp(gen_ppl),
        avg(diversity), avg(recovery_token_acc), avg(recovery_ce), any_value(diffusion_steps),
        any_value(denoiser_params), any_value(recovery_steps), any_value(recovery_params), bool_and(budget_matched),
        avg(train_seconds + recovery_seconds), avg(eval_seconds)
        FROM interface_results WHERE spec_hash = ? GROUP BY interface, layer
        ORDER BY interface != 'hidden', interface, layer""", [h])  # fmt: skip
    if not any(r[0] != "hidden" for r in rows):
        return
    t = Table(title="C3: interfaces at the bridge's budget (mean over seeds)")
    for c in ("interface", "layer", "seeds", "gen ppl", "± sd", "div", "rec. acc", "rec. CE", "diff. steps",
              "denoiser", "rec. steps", "rec. params", "matched", "train s", "eval s"):
        t.add_column(c, justify="left" if c == "interface" else "right")
    for r in rows:
        t.add_row(r[0], str(r[1]), str(r[2]), _f(r[3]), _f(r[4], ".2g"), _f(r[5], ".3f"), _f(r[6], ".3f"), _f(r[7]),
                  str(r[8]), f"{r[9]:,}", str(r[10]), f"{r[11]:,}", "yes" if r[12] else "NO", _f(r[13], ".0f"),
                  _f(r[14], ".0f"))  # fmt: skip
    con.print(t)
