"""Charts for the book: one Altair theme, a few chart builders, and offline HTML for the site.

Importing this module registers and enables the ``"ioi"`` Altair theme and the ``"ioi"``
renderer. The renderer refuses specs that load data from the network and emits two things:

* Altair's usual HTML output, so a chart renders as it always does in a live Jupyter kernel;
* the Vega-Lite spec itself under ``application/vnd.vegalite.v6+json``.

The book never shows the first: when the pipeline stages executed chapters for Jupyter Book it
replaces each chart's HTML by :func:`chart_html`, a ``<div class="ioi-chart">`` holding the
spec that ``book/_static/ioi-charts.js`` draws with a Vega bundle served from the book's own
``_static`` folder (see :mod:`ioi_helpers.pipeline`), so the built book needs no network.

Heatmaps of per-head effects use one diverging scale, blue (negative) - white (0) - red
(positive), symmetric about 0 so that colours mean the same on both sides.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd
from altair.vegalite.v6.display import html_renderer

from .paper import head_name

THEME = "ioi"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
DIVERGING = ("#2166ac", "#f7f7f7", "#b2182b")  # blue, white, red: negative, 0, positive
CATEGORY = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d")
CELL = 22  # pixels per heatmap cell
REMOTE_PREFIXES = ("http://", "https://", "//")
# Altair's own mimetype for Vega-Lite 6 ends in ".json", which nbformat only accepts for string
# data; "+json" lets the spec be stored as JSON in a notebook.
VEGALITE_MIME = "application/vnd.vegalite.v6+json"


@alt.theme.register(THEME, enable=True)
def theme() -> alt.theme.ThemeConfig:
    """Readable sans-serif text, light grid, colour-blind-friendly categories."""
    axis = {"labelFontSize": 12, "titleFontSize": 13, "titleFontWeight": "normal",
            "labelColor": "#333", "titleColor": "#222", "gridColor": "#e6e6e6"}
    return {
        "config": {
            "font": FONT,
            "view": {"continuousWidth": 320, "continuousHeight": 240, "stroke": None},
            "title": {"fontSize": 15, "fontWeight": "bold", "anchor": "start", "color": "#222",
                      "subtitleFontSize": 12, "subtitleColor": "#555"},
            "axis": axis,
            "header": {"labelFontSize": 12, "titleFontSize": 13},
            "legend": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal"},
            "range": {"category": list(CATEGORY), "diverging": list(DIVERGING)},
            "bar": {"color": CATEGORY[0]},
            "point": {"color": CATEGORY[0], "filled": True, "size": 50},
            "line": {"color": CATEGORY[0]},
        }
    }


# ----------------------------------------------------------------------------- offline output


def remote_urls(spec: Any) -> list[str]:
    """Every ``url`` in a chart spec that points at the network (``$schema`` is only an id)."""
    found: list[str] = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "url" and isinstance(value, str) and value.lower().startswith(REMOTE_PREFIXES):
                found.append(value)
            elif key != "$schema":
                found.extend(remote_urls(value))
    elif isinstance(spec, list):
        for value in spec:
            found.extend(remote_urls(value))
    return found


def check_offline(spec: dict) -> None:
    """Raise ``ValueError`` if the chart would fetch anything from the network."""
    urls = remote_urls(spec)
    if urls:
        raise ValueError(f"chart loads data from the network, which the offline book cannot do: "
                         f"{urls}; pass the data as a DataFrame instead")


def renderer(spec: dict, **metadata) -> tuple[dict, dict]:
    """Altair renderer ``"ioi"``: Altair's HTML for live kernels plus the raw Vega-Lite spec."""
    check_offline(spec)
    bundle = dict(html_renderer(spec, **metadata))
    bundle[VEGALITE_MIME] = spec
    return bundle, {}


alt.renderers.register(THEME, renderer)
alt.renderers.enable(THEME)


def chart_html(spec: dict) -> str:
    """The book's HTML for one chart: a div that ``_static/ioi-charts.js`` draws into."""
    check_offline(spec)
    payload = json.dumps(spec, sort_keys=True).replace("</", "<\\/")
    return f'<div class="ioi-chart"><script type="application/json">{payload}</script></div>'


def vega_bundle() -> str:
    """Vega, Vega-Lite (Altair's version) and vega-embed as one offline script.

    Built by the pinned ``vl-convert-python``; it defines ``window.vega``, ``window.vegaLite``
    and ``window.vegaEmbed`` and nothing else global (the bundle is wrapped in a function).
    """
    try:
        import vl_convert
    except ImportError as err:  # pragma: no cover - a broken install
        raise ImportError("the offline book needs vl-convert-python (pinned in requirements.txt: "
                          "python -m pip install -r requirements.txt)") from err

    version = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return "(function () {\n" + vl_convert.javascript_bundle(vl_version=version) + "\n})();\n"


def show(chart: alt.TopLevelMixin) -> None:
    """Display a chart in the notebook (through the ``"ioi"`` renderer, which checks it)."""
    from IPython.display import display

    display(chart)


# ----------------------------------------------------------------------------- chart builders


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def _head_set(heads: Iterable[Any] | None) -> set[tuple[int, int]]:
    """Heads as (layer, head) from tuples or "L.H" strings."""
    out = set()
    for h in heads or ():
        layer, head = (h.split(".") if isinstance(h, str) else h)
        out.add((int(layer), int(head)))
    return out


def head_heatmap(values: Any, title: str, value_label: str,
                 highlight: Iterable[Any] | None = None, vmax: float | None = None) -> alt.LayerChart:
    """A layer x head heatmap of a per-head quantity (layer on y, head on x).

    ``values`` is ``[n_layers, n_heads]`` (array or tensor). Colours are blue-white-red on a
    scale symmetric about 0 (``vmax`` fixes its end; default: the largest ``|value|``). The
    tooltip names the head "L.H". ``highlight`` (``(layer, head)`` pairs or "L.H" strings)
    outlines those heads.
    """
    arr = _array(values)
    if arr.ndim != 2:
        raise ValueError(f"head_heatmap expects values [layer, head], got shape {arr.shape}")
    marked = _head_set(highlight)
    cells_at = [(layer, head) for layer in range(arr.shape[0]) for head in range(arr.shape[1])]
    df = pd.DataFrame({
        "layer": [c[0] for c in cells_at], "head": [c[1] for c in cells_at], "value": arr.ravel(),
        "name": [head_name(c) for c in cells_at], "highlighted": [c in marked for c in cells_at],
    })
    finite = np.abs(arr[np.isfinite(arr)])
    top = float(vmax if vmax is not None else finite.max() if finite.size else 0.0) or 1.0
    base = alt.Chart(df).encode(
        x=alt.X("head:O", title="head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", title=value_label,
                        scale=alt.Scale(domain=[-top, 0, top], range=list(DIVERGING))),
        tooltip=[alt.Tooltip("name:N", title="head"),
                 alt.Tooltip("value:Q", title=value_label, format=".3f")],
    )
    outline = base.mark_rect(fill=None, stroke="black", strokeWidth=2).transform_filter(
        "datum.highlighted")
    return (cells + outline).properties(title=title, width=alt.Step(CELL), height=alt.Step(CELL))


def _field(name: str) -> str:
    """A column name as a Vega-Lite field: dots and brackets would mean nested access."""
    return name.replace("\\", "\\\\").replace(".", "\\.").replace("[", "\\[").replace("]", "\\]")


def _tooltip(df: pd.DataFrame, names: Sequence[str]) -> list[alt.Tooltip]:
    """Tooltips for columns: numbers as numbers (3 significant decimals), the rest as text."""
    def one(name: str) -> alt.Tooltip:
        if pd.api.types.is_numeric_dtype(df[name]) and not pd.api.types.is_bool_dtype(df[name]):
            return alt.Tooltip(field=_field(name), type="quantitative", title=name, format=".3~f")
        return alt.Tooltip(field=_field(name), type="nominal", title=name)
    return [one(n) for n in names]


def _color(name: str | None) -> dict[str, Any]:
    return {"color": alt.Color(field=_field(name), type="nominal", title=name)} if name else {}


def bar_chart(df: pd.DataFrame, x: str, y: str, color: str | None = None,
              title: str = "", tooltip: Sequence[str] | None = None,
              horizontal: bool = False) -> alt.Chart:
    """Bars of ``y`` per category ``x``, in the DataFrame's order (``horizontal=True``: the
    categories on the y axis)."""
    cat = {"field": _field(x), "type": "nominal", "sort": None, "title": x}
    val = {"field": _field(y), "type": "quantitative", "title": y}
    enc: dict[str, Any] = ({"y": alt.Y(**cat), "x": alt.X(**val)} if horizontal
                           else {"x": alt.X(**cat), "y": alt.Y(**val)})
    enc["tooltip"] = _tooltip(df, tooltip or [c for c in (x, y, color) if c])
    return alt.Chart(df).mark_bar().encode(**enc, **_color(color)).properties(title=title)


def histogram(df: pd.DataFrame, field: str, color: str | None = None, title: str = "",
              bins: int = 40) -> alt.Chart:
    """Counts of ``field`` in at most ``bins`` bins, stacked by ``color`` when given."""
    binned = {"field": _field(field), "type": "quantitative", "bin": alt.Bin(maxbins=bins)}
    return alt.Chart(df).mark_bar().encode(
        x=alt.X(**binned, title=field),
        y=alt.Y("count():Q", title="count"),
        tooltip=[alt.Tooltip(**binned, title=field), alt.Tooltip("count():Q", title="count")],
        **_color(color),
    ).properties(title=title)


def scatter_with_diagonal(df: pd.DataFrame, x: str, y: str, color: str | None = None,
                          title: str = "", tooltip: Sequence[str] | None = None) -> alt.LayerChart:
    """Points ``(x, y)`` over the dashed line y = x drawn across the range of both columns."""
    both = pd.concat([df[x], df[y]]).astype(float)
    lo, hi = float(both.min()), float(both.max())
    xq = alt.X(field=_field(x), type="quantitative", title=x)
    yq = alt.Y(field=_field(y), type="quantitative", title=y)
    points = alt.Chart(df).mark_point().encode(
        x=xq, y=yq, tooltip=_tooltip(df, tooltip or [c for c in (x, y, color) if c]), **_color(color))
    diagonal = alt.Chart(pd.DataFrame({x: [lo, hi], y: [lo, hi]})).mark_line(
        color="#888", strokeDash=[4, 4]).encode(x=xq, y=yq)
    return (diagonal + points).properties(title=title)
