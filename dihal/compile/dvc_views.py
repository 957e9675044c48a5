"""`dvc plots show` in a dihal project: readable charts, on a page that renders offline.

Two things DVC does not do by itself, both through mechanisms DVC honours:

- Its plots page loads Vega, Vega-Lite and Vega-Embed from a CDN, so it is blank without internet (a
  cluster node, an air-gapped machine). DVC renders into the page that config `plots.html_template` names;
  dihal ships one with the three libraries inlined (`vega/offline.html`, see `vendor_vega.py`), copies
  it to `.dvc/plots/dihal_offline.html` and names it in `.dvc/config`, unless some config level (system,
  global, repo, local) already names a page: then the user's choice stands.
- A stage-level plot has one `y` field and DVC's templates draw one line. The geometry and C1 plots name
  dihal's own Vega-Lite templates instead (`.dvc/plots/<name>.json`, where DVC looks templates up), which
  read the fields `dihal.stages.plot_series` puts in the rows: G with the proxies' z-scores folded in
  beside it, and a rule, point and label at ℓ*; the C1 points labelled with their layer, ℓ* in red.

`install` runs whenever a spec is compiled (`dihal compile`, `dihal run`), so the files follow dihal's
version; commit `.dvc/plots/` with `dvc.yaml` so a clone without dihal shows the same plots. The templates
fill DVC's anchors (`<DVC_METRIC_DATA>`, `<DVC_METRIC_X>`, ... as dvc_render.vega_templates spells them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dihal.spec.geometry import BUILTIN
from dihal.stages.plot_series import G_VS_LOSS_TEMPLATE, GEOMETRY_TEMPLATE, z_field, z_label
from dihal.utils.atomic import write_atomic

OFFLINE_PAGE = Path(__file__).parent / "vega" / "offline.html"
PLOTS_DIR = Path(".dvc") / "plots"  # DVC's templates_dir; `plots.html_template` is relative to `.dvc`
PAGE_NAME = "dihal_offline.html"
HTML_TEMPLATE = f"plots/{PAGE_NAME}"

ELL_STAR = "#d62728"
POINT = "#4c78a8"
# G first and dark, then one colour per proxy, in the order the legend lists them
PADDED = {"zero": False, "padding": 24}
SERIES_COLOURS = ["#222222", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def _anchor(name: str) -> str:
    return f"<DVC_METRIC_{name.upper()}>"


def _base(width: int, height: int) -> dict:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",  # an identifier; nothing fetches it
        "data": {"values": _anchor("data")},
        "title": {"text": _anchor("title"), "anchor": "middle"},
        "width": width,
        "height": height,
        # Vega-Embed's menu: no "open in the Vega editor" (a web site); export and the spec stay
        "usermeta": {"embedOptions": {"actions": {"export": True, "source": True, "compiled": False, "editor": False}}},
    }


def _series_label() -> str:
    """Vega expression: a folded field's legend name (`G = z(κ) + z(σ) − z(r)`, `z(κ)`, ...)."""
    expr = "datum.dihal_series"
    for proxy in reversed(list(BUILTIN)):
        expr = f"datum.dihal_series === '{z_field(proxy)}' ? '{z_label(proxy)}' : {expr}"
    return f"datum.dihal_series === 'G' ? (isValid(datum.G_formula) ? 'G = ' + datum.G_formula : 'G') : {expr}"


def geometry_template() -> dict:
    """G and the built-in proxies' z-scores against layer, one line each; ℓ*: a dashed rule, a point on G, a label."""
    folded = ["G", *(z_field(p) for p in BUILTIN)]
    order = " : ".join(f"datum.dihal_series === '{f}' ? {i}" for i, f in enumerate(folded))
    y = {"type": "quantitative", "title": _anchor("y_label"), "scale": {"zero": False}}
    at_ell_star = {"filter": "datum.ell_star === true"}
    return {
        **_base(560, 320),
        "encoding": {
            "x": {
                "field": _anchor("x"),
                "type": "quantitative",
                "title": _anchor("x_label"),
                "scale": {"zero": False, "padding": 12},
                # layers are whole numbers; Vega still puts ticks at halves on a short domain, so those go unlabelled
                "axis": {
                    "tickMinStep": 1,
                    "format": "d",
                    "labelExpr": "datum.value === floor(datum.value) ? datum.label : ''",
                },
            }
        },
        "layer": [
            {
                "transform": [
                    {"fold": folded, "as": ["dihal_series", "dihal_value"]},
                    {"filter": "isValid(datum.dihal_value)"},
                    {"calculate": _series_label(), "as": "series"},
                    {"calculate": f"{order} : {len(folded)}", "as": "dihal_order"},
                ],
                "mark": {"type": "line", "point": {"size": 25}},
                "encoding": {
                    "y": {"field": "dihal_value", **y},
                    "color": {
                        "field": "series",
                        "type": "nominal",
                        "title": None,
                        "sort": {"field": "dihal_order", "op": "min"},
                        "scale": {"range": SERIES_COLOURS},
                        "legend": {"orient": "bottom", "columns": 2, "labelLimit": 320},
                    },
                    "strokeWidth": {"condition": {"test": "datum.dihal_series === 'G'", "value": 3}, "value": 1.4},
                    "strokeDash": {"field": "rev", "type": "nominal", "title": "revision"},
                    "tooltip": [
                        {"field": _anchor("x"), "type": "quantitative", "title": "layer"},
                        {"field": "series", "type": "nominal"},
                        {"field": "dihal_value", "type": "quantitative", "title": "value", "format": "+.3f"},
                        {"field": "rev", "type": "nominal", "title": "revision"},
                    ],
                },
            },
            {
                "transform": [at_ell_star],
                "mark": {"type": "rule", "color": ELL_STAR, "strokeDash": [6, 4], "strokeWidth": 1.5},
            },
            {
                "transform": [at_ell_star],
                "mark": {"type": "point", "shape": "diamond", "filled": True, "size": 140, "color": ELL_STAR},
                "encoding": {"y": {"field": _anchor("y"), **y}},
            },
            {
                "transform": [at_ell_star, {"calculate": f"'ℓ* = ' + datum.{_anchor('x')}", "as": "dihal_label"}],
                "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 5, "dy": 4, "color": ELL_STAR},
                "encoding": {"text": {"field": "dihal_label"}, "y": {"value": 0}},
            },
        ],
    }


def g_vs_loss_template() -> dict:
    """C1: one point per swept layer at (G, mean bridge loss), each labelled with its layer; ℓ* in red."""
    label = "(datum.ell_star === true ? 'ℓ* = ' : 'layer ') + datum.layer"
    return {
        **_base(480, 320),
        "transform": [{"calculate": label, "as": "dihal_label"}],
        "encoding": {
            # padded (in pixels) so the labels of the extreme points stay inside the chart
            "x": {"field": _anchor("x"), "type": "quantitative", "title": _anchor("x_label"), "scale": dict(PADDED)},
            "y": {"field": _anchor("y"), "type": "quantitative", "title": _anchor("y_label"), "scale": dict(PADDED)},
            "color": {"condition": {"test": "datum.ell_star === true", "value": ELL_STAR}, "value": POINT},
        },
        "layer": [
            {
                "mark": {"type": "point", "filled": True, "size": 80},
                "encoding": {
                    "shape": {"field": "rev", "type": "nominal", "title": "revision"},
                    "tooltip": [
                        {"field": "layer", "type": "quantitative"},
                        {"field": _anchor("x"), "type": "quantitative", "format": "+.3f"},
                        {"field": _anchor("y"), "type": "quantitative", "format": ".4f"},
                        {"field": "rev", "type": "nominal", "title": "revision"},
                    ],
                },
            },
            {
                "mark": {"type": "text", "align": "center", "baseline": "bottom", "dy": -7, "fontSize": 11},
                "encoding": {"text": {"field": "dihal_label"}},
            },
        ],
    }


TEMPLATES = {GEOMETRY_TEMPLATE: geometry_template, G_VS_LOSS_TEMPLATE: g_vs_loss_template}


def template_text(name: str) -> str:
    """A template as the file DVC reads (stable key order, so a project's copy changes only when the template does)."""
    return json.dumps(TEMPLATES[name](), indent=2, ensure_ascii=False) + "\n"


def _put(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomic(path, data)
    return True


def _repo_names_a_page(config: Path) -> bool:
    """Whether `.dvc/config` has `html_template` in its `[plots]` section (read as text: no DVC import)."""
    section = ""
    for line in (config.read_text(encoding="utf-8") if config.is_file() else "").splitlines():
        head = re.fullmatch(r"\s*\[(.+)\]\s*", line)
        section = head.group(1).strip() if head else section
        if section == "plots" and re.fullmatch(r"\s*html_template\s*=.*", line):
            return True
    return False


def _name_page(dvc_dir: Path) -> bool:
    """Set `plots.html_template` in the repo config unless a config level names a page already."""
    if _repo_names_a_page(dvc_dir / "config"):
        return False
    from dvc.config import Config

    config = Config(str(dvc_dir))
    if config.get("plots", {}).get("html_template"):
        return False  # set globally, system-wide or in config.local: the user's page
    with config.edit("repo") as conf:
        conf["plots"]["html_template"] = HTML_TEMPLATE
    return True


def install(root: Path) -> list[str]:
    """Write the templates and the offline page into `.dvc/plots/` and name the page; returns the paths changed."""
    root = Path(root)
    files = {PLOTS_DIR / f"{name}.json": template_text(name).encode("utf-8") for name in TEMPLATES}
    files[PLOTS_DIR / PAGE_NAME] = OFFLINE_PAGE.read_bytes()
    changed = [str(rel) for rel, data in files.items() if _put(root / rel, data)]
    if _name_page(root / ".dvc"):
        changed.append(str(Path(".dvc") / "config"))
    return changed
