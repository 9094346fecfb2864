"""Charts for the book: one Altair theme, a few chart builders, and offline HTML for the site.

Importing this module registers and enables the ``"ioi"`` Altair theme and the ``"ioi"``
renderer, and (through :mod:`ioi_helpers.tables`) tells pandas to show every character of a
table cell: a template or a prompt is the point of its cell, never cut to "...". The renderer
refuses specs that load data from the network and emits two things:

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

import itertools
import json
import textwrap
from typing import Any, Iterable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
from altair.vegalite.v6.display import html_renderer

from . import tables  # noqa: F401  (sets pandas' table options for every chapter)
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


TITLE_CHARS = 64  # a title line in the theme's 15-px bold font fits the book's column (~680 px)


def fitted(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """``chart`` with a long string title broken into lines of at most :data:`TITLE_CHARS`
    characters (Vega draws a list of strings as lines), so the title does not make the figure
    wider than the column; any other title is left as it is."""
    title = getattr(chart, "title", alt.Undefined)
    if isinstance(title, str) and len(title) > TITLE_CHARS:
        return chart.properties(title=textwrap.wrap(title, TITLE_CHARS))
    return chart


def show(chart: alt.TopLevelMixin) -> None:
    """Display a chart in the notebook (through the ``"ioi"`` renderer, which checks it), its
    title :func:`fitted` to the column."""
    from IPython.display import display

    display(fitted(chart))


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


# ----------------------------------------------------------------------------- interactive charts
#
# These charts carry their interactivity in the Vega-Lite spec (selections, and parameters
# bound to dropdowns and checkboxes) over data computed when the page was built, so they work
# in the static book without a kernel: ioi-charts.js draws them with vega-embed, which also
# renders the bound inputs and the tooltips.

ATTENTION_SCALE = ("#f7fbff", "#08306b")  # white to dark blue: 0 to 1
NO_CLASS = "none"


def head_classes(classes: Mapping[str, Iterable[Any]] | None) -> dict[tuple[int, int], str]:
    """Head -> the names of the classes it belongs to (``", "``-joined), from a mapping
    class name -> heads (``(layer, head)`` pairs or "L.H" strings)."""
    out: dict[tuple[int, int], str] = {}
    for name, heads in (classes or {}).items():
        for h in _head_set(heads):
            out[h] = f"{out[h]}, {name}" if h in out else name
    return out


def _token_label(i: int, token: str) -> str:
    """An axis label for the token at position ``i``: "3 John" (a blank token as its repr)."""
    return f"{i} {token.strip() or repr(token)}"


def _head_frame(values: Any, classes: Mapping[str, Iterable[Any]] | None) -> pd.DataFrame:
    """One row per head: name "L.H", layer, index, value, class."""
    arr = _array(values)
    if arr.ndim != 2:
        raise ValueError(f"expected values [layer, head], got shape {arr.shape}")
    of = head_classes(classes)
    cells = [(l, h) for l in range(arr.shape[0]) for h in range(arr.shape[1])]
    return pd.DataFrame({"head": [head_name(c) for c in cells], "layer": [c[0] for c in cells],
                         "index": [c[1] for c in cells], "value": arr.ravel(),
                         "class": [of.get(c, NO_CLASS) for c in cells]})


def _symmetric_top(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def attention_pattern(pattern: Any, tokens: Sequence[str], title: str = "") -> alt.Chart:
    """One head's attention pattern on one prompt: query token (y) x key token (x), colour =
    attention probability (0 white to 1 dark blue); ``pattern`` is ``[query, key]``."""
    arr = _array(pattern)
    n = len(tokens)
    if arr.shape != (n, n):
        raise ValueError(f"pattern must be [{n}, {n}] for {n} tokens, got {arr.shape}")
    labels = [_token_label(i, t) for i, t in enumerate(tokens)]
    rows = [{"query": labels[q], "key": labels[k], "q": q, "k": k, "attention": float(arr[q, k])}
            for q in range(n) for k in range(q + 1)]
    df = pd.DataFrame(rows)
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("key:O", sort=alt.EncodingSortField("k", op="min"), title="key (attended to)",
                axis=alt.Axis(labelAngle=-45)),
        y=alt.Y("query:O", sort=alt.EncodingSortField("q", op="min"), title="query (attending)"),
        color=alt.Color("attention:Q", scale=alt.Scale(domain=[0, 1], range=list(ATTENTION_SCALE)),
                        title="attention"),
        tooltip=[alt.Tooltip("query:N"), alt.Tooltip("key:N"),
                 alt.Tooltip("attention:Q", format=".3f")],
    ).properties(title=title, width=alt.Step(CELL), height=alt.Step(CELL))


def attention_explorer_chart(values: Any, patterns: Any, tokens: Sequence[Sequence[str]],
                             classes: Mapping[str, Iterable[Any]] | None = None,
                             value_label: str = "effect", default: Any = None,
                             title: str = "", prompt_titles: Sequence[str] | None = None,
                             ) -> alt.VConcatChart:
    """Pick a head (dropdown, or click a heatmap cell) and see its attention on a few prompts.

    On top, a layer x head heatmap of ``values`` (``[layer, head]``); hovering a cell shows
    the head's name, class (from ``classes``: class name -> heads) and value. Below, the chosen
    head's name, class and value, and its attention pattern on each prompt. ``patterns`` is ``[prompt, layer, head, seq,
    seq]`` (array or tensor; positions past a prompt's length are ignored); ``tokens[p]`` are
    prompt ``p``'s token strings. ``default``: the head shown first (default: the head of
    largest ``|value|``). All data are inlined (no kernel needed); patterns are stored in
    whole percent.
    """
    heads = _head_frame(values, classes)
    pats = _array(patterns)
    n_prompts, n_layers, n_heads = pats.shape[:3]
    if (n_layers, n_heads) != (heads["layer"].max() + 1, heads["index"].max() + 1):
        raise ValueError("patterns and values must have the same [layer, head] shape")
    if len(tokens) != n_prompts:
        raise ValueError(f"{n_prompts} prompts of patterns but {len(tokens)} token lists")
    if default is None:
        default = heads.loc[heads["value"].abs().fillna(-1).idxmax(), "head"]
    elif not isinstance(default, str):
        default = head_name(default)
    heads["label"] = [f"head {n} | class: {c} | {value_label}: {v:.3f}"
                      for n, c, v in zip(heads["head"], heads["class"], heads["value"])]
    rows = []  # one per (head, prompt): the lower triangle of the pattern, flattened, in %
    for p in range(n_prompts):
        n = len(tokens[p])
        tri = np.tril_indices(n)
        for l in range(n_layers):
            for h in range(n_heads):
                rows.append({"head": f"{l}.{h}", "prompt": p,
                             "a": np.rint(100 * pats[p, l, h][:n, :n][tri]).astype(int).tolist()})
    att = pd.DataFrame(rows)
    toks = pd.DataFrame([{"key": 1000 * p + i, "label": _token_label(i, t)}
                         for p, ts in enumerate(tokens) for i, t in enumerate(ts)])
    names = heads["head"].tolist()
    pick = alt.selection_point(name="head", fields=["head"], value=default, on="click",
                               clear=False, bind=alt.binding_select(options=names, name="head "))
    top = _symmetric_top(heads["value"].to_numpy())
    overview = alt.Chart(heads).mark_rect(stroke="black").encode(
        x=alt.X("index:O", title="head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
        color=alt.Color("value:Q", title=value_label,
                        scale=alt.Scale(domain=[-top, 0, top], range=list(DIVERGING))),
        strokeWidth=alt.condition(pick, alt.value(2.5), alt.value(0)),
        tooltip=[alt.Tooltip("head:N"), alt.Tooltip("class:N"),
                 alt.Tooltip("value:Q", title=value_label, format=".3f")],
    ).add_params(pick).properties(title=title or f"{value_label} per head (click or pick one)",
                                  width=alt.Step(CELL), height=alt.Step(CELL))
    caption = alt.Chart(heads).transform_filter(pick).mark_text(
        align="left", fontSize=13, fontWeight="bold").encode(
        text="label:N", x=alt.value(0), y=alt.value(8)).properties(width=420, height=16)
    panels = []
    for p in range(n_prompts):
        base = alt.Chart(att).transform_filter(pick).transform_filter(f"datum.prompt == {p}")
        panel = base.transform_flatten(["a"]).transform_window(i="row_number()").transform_calculate(
            q="floor((sqrt(8 * (datum.i - 1) + 1) - 1) / 2)").transform_calculate(
            k="datum.i - 1 - datum.q * (datum.q + 1) / 2", attention="datum.a / 100").transform_calculate(
            qkey=f"{1000 * p} + datum.q", kkey=f"{1000 * p} + datum.k").transform_lookup(
            lookup="qkey", from_=alt.LookupData(toks, "key", ["label"]), as_=["query"]).transform_lookup(
            lookup="kkey", from_=alt.LookupData(toks, "key", ["label"]), as_=["key"]).mark_rect().encode(
            x=alt.X("key:O", sort=alt.EncodingSortField("k", op="min"), title="key (attended to)",
                    axis=alt.Axis(labelAngle=-45)),
            y=alt.Y("query:O", sort=alt.EncodingSortField("q", op="min"), title="query (attending)"),
            color=alt.Color("attention:Q", title="attention",
                            scale=alt.Scale(domain=[0, 1], range=list(ATTENTION_SCALE))),
            tooltip=[alt.Tooltip("query:N"), alt.Tooltip("key:N"),
                     alt.Tooltip("attention:Q", format=".2f")],
        ).properties(title=(prompt_titles[p] if prompt_titles else f"prompt {p + 1}"),
                     width=alt.Step(CELL), height=alt.Step(CELL))
        panels.append(panel)
    return alt.vconcat(overview, caption, *panels).resolve_scale(color="independent")


def patching_explorer_chart(effects: Mapping[str, Any], classes: Mapping[str, Iterable[Any]] | None = None,
                            value_label: str = "effect", title: str = "",
                            descriptions: Mapping[str, str] | None = None) -> alt.VConcatChart:
    """Pick an experiment from a dropdown and see its per-head heatmap.

    ``effects`` maps an experiment's name (e.g. "logits", "q of Name Movers at END") to its
    ``[layer, head]`` result. Colours share one blue-white-red scale symmetric about 0 across
    experiments; hovering a cell shows the head's name, class and value; heads that belong
    to a class are outlined. ``descriptions`` adds a line under the dropdown per experiment.
    """
    if not effects:
        raise ValueError("no experiment to show")
    frames = []
    for name, values in effects.items():
        df = _head_frame(values, classes)
        df["experiment"] = name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["in class"] = df["class"] != NO_CLASS
    df["about"] = [(descriptions or {}).get(e, e) for e in df["experiment"]]
    names = list(effects)
    chosen = alt.param(name="experiment", value=names[0],
                       bind=alt.binding_select(options=names, name="experiment "))
    top = _symmetric_top(df["value"].to_numpy())
    base = alt.Chart(df).transform_filter("datum.experiment == experiment")
    cells = base.mark_rect().encode(
        x=alt.X("index:O", title="head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
        color=alt.Color("value:Q", title=value_label,
                        scale=alt.Scale(domain=[-top, 0, top], range=list(DIVERGING))),
        tooltip=[alt.Tooltip("head:N"), alt.Tooltip("class:N"),
                 alt.Tooltip("value:Q", title=value_label, format=".3f")],
    )
    outline = base.transform_filter("datum['in class']").mark_rect(
        fill=None, stroke="black", strokeWidth=2).encode(x="index:O", y="layer:O")
    caption = base.transform_filter("datum.layer == 0 && datum.index == 0").mark_text(
        align="left", fontSize=12).encode(text="about:N", x=alt.value(0), y=alt.value(8)).properties(
        width=420, height=16)
    heat = (cells + outline).add_params(chosen).properties(width=alt.Step(CELL), height=alt.Step(CELL))
    return alt.vconcat(caption, heat).properties(title=title)


def ablation_explorer_chart(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str],
                            title: str = "") -> alt.VConcatChart:
    """Tick circuit classes on or off (checkboxes) and see F(C) against F(M).

    ``rows``: one per subset of ``class_names`` kept in the circuit, each with ``"classes"``
    (the names kept), ``"F(C)"`` and ``"F(M)"``. Every subset the checkboxes can form must
    be present (checked in Python; missing ones would draw nothing).
    """
    names = list(class_names)
    keyed = {}
    for r in rows:
        kept = set(r["classes"])
        if not kept <= set(names):
            raise ValueError(f"unknown classes {sorted(kept - set(names))}")
        keyed["".join("1" if n in kept else "0" for n in names)] = r
    every = ("".join(bits) for bits in itertools.product("01", repeat=len(names)))
    missing = [k for k in every if k not in keyed]
    if missing:
        raise ValueError(f"{len(missing)} subset(s) of the classes have no row, e.g. {missing[0]!r}")
    data = []
    for key, r in keyed.items():
        ratio = r["F(C)"] / r["F(M)"] if r["F(M)"] else float("nan")
        kept = ", ".join(n for n in names if n in r["classes"]) or "no class"
        for q in ("F(M)", "F(C)"):
            data.append({"key": key, "quantity": q, "value": float(r[q]), "ratio": ratio,
                         "kept": kept, "label": f"{float(r[q]):.2f}"})
    df = pd.DataFrame(data)
    params = [alt.param(name=f"c{i}", value=True, bind=alt.binding_checkbox(name=n + " "))
              for i, n in enumerate(names)]
    key_expr = " + ".join(f"(c{i} ? '1' : '0')" for i in range(len(names))) or "''"
    base = alt.Chart(df).transform_filter(f"datum.key == {key_expr}").encode(
        y=alt.Y("quantity:N", title=None, sort=["F(M)", "F(C)"]),
        x=alt.X("value:Q", title="mean logit difference"),
    )
    bars = base.mark_bar().encode(
        color=alt.Color("quantity:N", legend=None,
                        scale=alt.Scale(domain=["F(M)", "F(C)"], range=[CATEGORY[0], CATEGORY[1]])),
        tooltip=[alt.Tooltip("quantity:N"), alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("ratio:Q", title="F(C)/F(M)", format=".3f"), alt.Tooltip("kept:N")])
    labels = base.mark_text(align="left", dx=4).encode(text="label:N")
    chart = (bars + labels).properties(width=360, height=80)
    if params:
        chart = chart.add_params(*params)
    caption = alt.Chart(df).transform_filter(f"datum.key == {key_expr} && datum.quantity == 'F(C)'").transform_calculate(
        text="'F(C)/F(M) = ' + format(datum.ratio, '.3f') + '   (kept: ' + datum.kept + ')'").mark_text(
        align="left", fontSize=12).encode(text="text:N", x=alt.value(0), y=alt.value(8)).properties(
        width=360, height=16)
    return alt.vconcat(caption, chart).properties(title=title)


# ----------------------------------------------------------------------------- the circuit


# Where each class sits in the diagram (column = stage of the algorithm, row) and the paper's
# compositions between classes (Fig. 2; Sec. 3.2-3.4): (from, to, label).
CIRCUIT_LAYOUT: dict[str, tuple[float, float]] = {
    "Previous Token": (0, 2.0), "Duplicate Token": (1, 0.0), "Induction": (1, 2.0),
    "S-Inhibition": (2, 1.0), "Name Mover": (3, 0.0), "Negative Name Mover": (3, 1.0),
    "Backup Name Mover": (3, 2.0), "logits": (4, 1.0),
}
CIRCUIT_EDGES: tuple[tuple[str, str, str], ...] = (
    ("Previous Token", "Induction", "K at S1+1"),
    ("Duplicate Token", "S-Inhibition", "V at S2"),
    ("Induction", "S-Inhibition", "V at S2"),
    ("S-Inhibition", "Name Mover", "Q at END"),
    ("S-Inhibition", "Negative Name Mover", "Q at END"),
    ("S-Inhibition", "Backup Name Mover", "Q at END"),
    ("Name Mover", "logits", "direct"),
    ("Negative Name Mover", "logits", "direct"),
    ("Backup Name Mover", "logits", "direct"),
)


def circuit_diagram(classes: Mapping[str, Iterable[Any]], title: str = "",
                    edges: Sequence[tuple[str, str, str]] = CIRCUIT_EDGES) -> alt.LayerChart:
    """The circuit as boxes (one per class, its heads listed inside) joined by arrows (the
    compositions in ``edges``: sender class, receiver class, label). Classes not in
    :data:`CIRCUIT_LAYOUT` are stacked under the others."""
    layout = dict(CIRCUIT_LAYOUT)
    extra_row = max(y for _, y in layout.values()) + 1
    for name in classes:
        if name not in layout:
            layout[name] = (0, extra_row)
            extra_row += 1
    w, h = 0.42, 0.34
    boxes = []
    for name, (col, y) in layout.items():
        x = col * 1.5
        if name == "logits":
            heads = "logit(IO) - logit(S)"
        elif name in classes:
            names = [head_name(tuple(int(v) for v in hd)) for hd in sorted(classes[name])]
            heads = "\n".join(" ".join(names[i:i + 4]) for i in range(0, len(names), 4)) or "none"
        else:
            continue
        boxes.append({"class": name, "heads": heads, "x": x - w, "x2": x + w, "y": y - h, "y2": y + h,
                      "cx": x, "cy": y})
    df = pd.DataFrame(boxes)
    pos = {r["class"]: (r["cx"], r["cy"]) for r in boxes}
    lines = []
    for i, (a, b, label) in enumerate(edges):
        if a not in pos or b not in pos:
            continue
        (x0, y0), (x1, y1) = pos[a], pos[b]
        lines.append({"edge": i, "x": x0 + w, "y": y0, "x2": x1 - w, "y2": y1, "label": label,
                      "lx": (x0 + w + x1 - w) / 2, "ly": (y0 + y1) / 2 - 0.1})
    ef = pd.DataFrame(lines, columns=["edge", "x", "y", "x2", "y2", "label", "lx", "ly"])
    xs = alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.5, 6.5]))
    ys = alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[extra_row - 0.5, -0.6]))
    base = alt.Chart(df).encode(xs, ys)
    rect = base.mark_rect(cornerRadius=6, fill="#eef3f8", stroke="#4c78a8", strokeWidth=1.5).encode(
        x2="x2:Q", y2="y2:Q", tooltip=[alt.Tooltip("class:N"), alt.Tooltip("heads:N")])
    name_text = alt.Chart(df).mark_text(fontWeight="bold", fontSize=12, dy=-10).encode(
        alt.X("cx:Q", axis=None, scale=alt.Scale(domain=[-0.5, 6.5])),
        alt.Y("cy:Q", axis=None, scale=alt.Scale(domain=[extra_row - 0.5, -0.6])), text="class:N")
    head_text = alt.Chart(df).mark_text(fontSize=11, dy=-2, color="#333", lineBreak="\n", baseline="top").encode(
        alt.X("cx:Q", axis=None, scale=alt.Scale(domain=[-0.5, 6.5])),
        alt.Y("cy:Q", axis=None, scale=alt.Scale(domain=[extra_row - 0.5, -0.6])), text="heads:N")
    edge_base = alt.Chart(ef)
    rule = edge_base.mark_rule(color="#888", strokeWidth=1.5).encode(xs, ys, x2="x2:Q", y2="y2:Q")
    tip = edge_base.mark_point(shape="triangle-right", filled=True, color="#888", size=60).encode(
        alt.X("x2:Q", axis=None, scale=alt.Scale(domain=[-0.5, 6.5])),
        alt.Y("y2:Q", axis=None, scale=alt.Scale(domain=[extra_row - 0.5, -0.6])))
    label = edge_base.mark_text(fontSize=10, color="#555").encode(
        alt.X("lx:Q", axis=None, scale=alt.Scale(domain=[-0.5, 6.5])),
        alt.Y("ly:Q", axis=None, scale=alt.Scale(domain=[extra_row - 0.5, -0.6])), text="label:N")
    return (rule + tip + label + rect + name_text + head_text).properties(
        width=900, height=70 * extra_row + 40, title=title)


# ----------------------------------------------------------------------------- ROC curves


def roc_chart(curves: pd.DataFrame, title: str = "",
              auc: Mapping[tuple[str, str], float] | None = None) -> alt.HConcatChart:
    """ROC curves of several methods overlaid, one panel per reference.

    ``curves``: long table with columns ``method``, ``reference``, ``fpr``, ``tpr``,
    ``threshold``, one row per point in the order of decreasing threshold
    (``autodiscovery.roc_frame``). ``auc``: (method, reference) -> AUC, shown in the tooltip.
    Points are joined by straight segments, as the trapezoid AUC counts them (a tie between
    reference and other heads is a diagonal); the dashed diagonal is chance.
    """
    df = curves.copy()
    df["threshold"] = df["threshold"].replace(np.inf, np.nan)
    df["step"] = df.groupby(["method", "reference"]).cumcount()
    if auc is not None:
        df["AUC"] = [auc.get((m, r), np.nan) for m, r in zip(df["method"], df["reference"])]
    tips = [c for c in ("method", "reference", "threshold", "fpr", "tpr", "AUC") if c in df]
    x = alt.X("fpr:Q", title="false positive rate", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("tpr:Q", title="true positive rate", scale=alt.Scale(domain=[0, 1]))
    diagonal = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(
        color="#999", strokeDash=[4, 4]).encode(x, y)
    panels = []
    for ref in df["reference"].unique():
        lines = alt.Chart(df[df["reference"] == ref]).mark_line(point=True, strokeWidth=2).encode(
            x, y, color=alt.Color("method:N", title="method", legend=alt.Legend(orient="bottom", columns=2)),
            order=alt.Order("step:Q"),
            tooltip=_tooltip(df, tips))
        panels.append((diagonal + lines).properties(title=f"reference: {ref}", width=260, height=260))
    # two panels a row, the legend below: the figure fits the book's column (about 680 px)
    return alt.concat(*panels, columns=2).properties(title=title)


VERDICT_COLORS = {"reproduced": "#54a24b", "not reproduced": "#e45756",
                  "calibrated, not reproduced": "#b279a2", "not measured": "#9d9d9d", "not run": "#cccccc"}


def scorecard_chart(rows: pd.DataFrame, title: str = "") -> alt.LayerChart | alt.VConcatChart:
    """Paper vs ours, one row per number: the tolerance band (grey bar; open ends run to the edge),
    the paper's value (black tick) and ours (a dot coloured by its verdict).

    Args:
        rows: one row per number, columns ``claim``, ``paper``, ``ours``, ``low``, ``high``,
            ``verdict`` (``low``/``high``: the band, None where unbounded; ``ours`` None when not
            measured), and optionally ``unit``: then one panel per unit, each with its own x axis
            (a logit difference and a fraction never share a scale).
    """
    title = title or "Paper (black tick) vs ours (dot), with the tolerance band (grey)"
    if "unit" in rows.columns:
        panels = [_scorecard_panel(part, str(u)) for u, part in rows.groupby("unit", sort=False)]
        if len(panels) > 1:
            return alt.vconcat(*panels).resolve_scale(x="independent", color="shared").properties(title=title)
        return panels[0].properties(title=title)
    return _scorecard_panel(rows, "value (each number in its own units)").properties(title=title)


def _scorecard_panel(rows: pd.DataFrame, x_title: str) -> alt.LayerChart:
    df = rows[["claim", "paper", "ours", "low", "high", "verdict"]].copy()
    values = pd.concat([df[c] for c in ("paper", "ours", "low", "high")]).dropna().astype(float)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    df["band from"] = df["low"].astype(float).fillna(lo - pad)
    df["band to"] = df["high"].astype(float).fillna(hi + pad)
    df["verdict"] = df["verdict"].astype(str)
    y = alt.Y("claim:N", sort=None, title=None, axis=alt.Axis(labelLimit=420))  # whole claims
    x_scale = alt.Scale(domain=[lo - pad, hi + pad], nice=False, clamp=True)
    height = 18 * len(df)
    base = alt.Chart(df).properties(width=220, height=height)  # with the claims: the column
    band = base.mark_bar(color="#d9d9d9", height=10).encode(
        y=y, x=alt.X("band from:Q", scale=x_scale, title=x_title),
        x2="band to:Q", tooltip=["claim", "paper", "low", "high"])
    tick = base.mark_tick(color="#222", thickness=2, size=14).transform_filter(
        "isValid(datum.paper)").encode(y=y, x=alt.X("paper:Q", scale=x_scale))
    dots = base.mark_point(filled=True, size=70, opacity=1).transform_filter("isValid(datum.ours)").encode(
        y=y, x=alt.X("ours:Q", scale=x_scale),
        color=alt.Color("verdict:N", title="verdict", legend=alt.Legend(orient="bottom", columns=1),
                        scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))),
        tooltip=["claim", "paper", "ours", "verdict"])
    return alt.layer(band, tick, dots)


# ----------------------------------------------------------------------------- faithfulness


def faithfulness_chart(curves: pd.DataFrame, points: pd.DataFrame | None = None,
                       title: str = "") -> alt.LayerChart | alt.VConcatChart:
    """MIB faithfulness curves, one line per method, with fixed circuits as labelled points.

    Args:
        curves: long table, columns ``method``, ``fraction`` (of the graph's edges kept),
            ``faithfulness``, and optionally ``panel`` (one panel per value, e.g. a model).
        points: circuits as points: ``circuit``, ``fraction``, ``faithfulness`` (and ``panel``).
        title: chart title.

    The x axis is logarithmic for reading (MIB's points run from 0.1 % to 100 %); CPR and CMD
    integrate on the linear axis (:mod:`ioi_helpers.faithfulness`). Dashed lines: 0 (the empty
    circuit) and 1 (the model).
    """
    df = curves.copy()
    if "panel" not in df:
        df["panel"] = ""
    pts = points.copy() if points is not None else pd.DataFrame(
        columns=["circuit", "fraction", "faithfulness", "panel"])
    if "panel" not in pts:
        pts["panel"] = ""
    x = alt.X("fraction:Q", title="fraction of edges kept (log scale)",
              scale=alt.Scale(type="log", domain=[0.001, 1]))
    y = alt.Y("faithfulness:Q", title="faithfulness")
    panels = []
    for panel in df["panel"].unique():
        part = df[df["panel"] == panel]
        lines = alt.Chart(part).mark_line(point=True).encode(
            x, y, color=alt.Color("method:N", title="method"),
            tooltip=_tooltip(part, ["method", "fraction", "faithfulness"]))
        refs = alt.Chart(pd.DataFrame({"faithfulness": [0.0, 1.0]})).mark_rule(
            color="#999", strokeDash=[4, 4]).encode(y="faithfulness:Q")
        layer = refs + lines
        p = pts[pts["panel"] == panel]
        if len(p):
            dots = alt.Chart(p).mark_point(shape="diamond", size=120, filled=True, color="#222").encode(
                x, y, tooltip=_tooltip(p, ["circuit", "fraction", "faithfulness"]))
            labels = alt.Chart(p).mark_text(dx=8, align="left", fontSize=11).encode(x, y, text="circuit:N")
            layer = layer + dots + labels
        panels.append(layer.properties(title=str(panel), width=380, height=260))
    chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels)  # one above the other: the column
    return chart.properties(title=title)
