"""Interactivity that needs no kernel: the book's Altair selections and bound inputs really work,
offline, in headless Chromium; the live widgets leave a chart in the static book.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages on file descriptors 3 and 4), so no driver or extra package is needed. A test picks a
dropdown value (or ticks a checkbox, or hovers a cell) the way a reader would, then reads what
the chart drew: its SVG marks and texts, or the tooltip. Without Chromium the browser tests
skip, unless ``CI`` is set: then they fail (the ``chromium`` fixture of test_book_render).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from devtools import DevTools
from ioi_helpers import pipeline, plots
from test_book_render import chromium  # noqa: F401  (the fixture: skip or fail without Chromium)

CLASSES = {"Name Mover": [(2, 1)], "S-Inhibition": ["1.0", (2, 1)]}
TOKENS = [["When", " Mary", " and", " John", " went", " to"],
          ["Then", " Bob", " and", " Ann", " had", " a"]]


# ----------------------------------------------------------------------------- a DevTools client


class Browser(DevTools):
    """Headless Chromium (:class:`devtools.DevTools`) with a 1300 x 1000 window."""

    def __init__(self, executable: str, profile: Path) -> None:
        super().__init__(executable, profile, width=1300, height=1000)

    def open(self, page: Path, timeout: float = 60) -> list[str]:
        """Load a page and wait until every chart drew (or failed); their states."""
        self.navigate(page)
        deadline = time.monotonic() + timeout
        while True:
            states = self.js("document.readyState === 'complete' ? Array.from("
                             "document.querySelectorAll('div.ioi-chart')).map(d => "
                             "d.classList.contains('ioi-chart-error') ? 'error' : "
                             "(d.dataset.ioiChart || '')) : null")
            if states is not None and all(s in ("drawn", "error") for s in states):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"charts of {page.name} did not draw: {states}")
            time.sleep(0.1)

    def mouse_to(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, page=True)


# What a chart drew: every rect's fill and every text, in document order.
DRAWN = """(i => Array.from(document.querySelectorAll('div.ioi-chart')[i].querySelectorAll(
  'svg g.mark-rect path, svg g.mark-text text')).map(e => (e.getAttribute('fill') || '')
  + '|' + (e.textContent || '')))"""
TEXTS = """(i => Array.from(document.querySelectorAll('div.ioi-chart')[i].querySelectorAll(
  'svg g.mark-text text')).map(e => e.textContent))"""
OPTIONS = """(i => Array.from(document.querySelectorAll('div.ioi-chart')[i].querySelectorAll(
  '.vega-bindings select option')).map(o => o.value))"""


def choose(browser: Browser, chart: int, value: str) -> None:
    """Pick ``value`` in the chart's dropdown as a reader would (focus, set, change event)."""
    browser.js(f"""(async () => {{
      const s = document.querySelectorAll('div.ioi-chart')[{chart}].querySelector('.vega-bindings select');
      s.focus(); s.value = {json.dumps(value)};
      s.dispatchEvent(new Event('input', {{bubbles: true}}));
      s.dispatchEvent(new Event('change', {{bubbles: true}}));
      await new Promise(r => setTimeout(r, 400)); }})()""")


def click_checkbox(browser: Browser, chart: int, index: int) -> None:
    browser.js(f"""(async () => {{
      document.querySelectorAll('div.ioi-chart')[{chart}]
        .querySelectorAll('.vega-bindings input[type=checkbox]')[{index}].click();
      await new Promise(r => setTimeout(r, 400)); }})()""")


def hover_cell(browser: Browser, chart: int, index: int) -> str:
    """Move the mouse onto the ``index``-th rect of a chart; the tooltip's text."""
    x, y = browser.js(f"""(() => {{
      const p = document.querySelectorAll('div.ioi-chart')[{chart}].querySelectorAll(
        'svg g.mark-rect path')[{index}];
      p.scrollIntoView({{block: 'center'}});
      const r = p.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
    browser.mouse_to(x, y)
    time.sleep(0.4)
    return browser.js("(document.getElementById('vg-tooltip-element') || {}).innerText || ''")


@pytest.fixture
def browser(chromium, tmp_path):  # noqa: F811  (the imported fixture)
    b = Browser(chromium, tmp_path / "profile")
    yield b
    b.close()


# ----------------------------------------------------------------------------- charts


def example_charts():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 4))
    patterns = np.tril(rng.random((2, 3, 4, 6, 6)))
    patterns /= patterns.sum(-1, keepdims=True)
    attention = plots.attention_explorer_chart(values, patterns, TOKENS, CLASSES, default=(2, 1))
    patching = plots.patching_explorer_chart({"logits": values, "q of Name Mover": -2 * values},
                                             CLASSES, descriptions={"logits": "to the logits"})
    rows = [{"classes": [n for i, n in enumerate(["A", "B"]) if k >> i & 1], "F(C)": 1.0 + k,
             "F(M)": 4.0} for k in range(4)]
    return attention, patching, plots.ablation_explorer_chart(rows, ["A", "B"])


def chart_page(folder: Path, charts) -> Path:
    """A page with the charts as the pipeline writes them, and the book's scripts."""
    shutil.copy(REPO / "book" / "_static" / "ioi-charts.js", folder)
    (folder / "vega-bundle.js").write_text(plots.vega_bundle())
    body = "\n".join(plots.chart_html(c.to_dict()) for c in charts)
    page = folder / "interactive.html"
    page.write_text('<!doctype html><html><head><meta charset="utf-8"><script src="vega-bundle.js">'
                    f'</script><script src="ioi-charts.js"></script></head><body>{body}</body></html>')
    return page


def test_specs_carry_their_controls_through_the_offline_staging():
    attention, patching, abl = example_charts()
    for chart, kind in ((attention, "select"), (patching, "select"), (abl, "checkbox")):
        spec = chart.to_dict()
        binds = [p["bind"]["input"] for p in _params(spec) if "bind" in p]
        assert kind in binds
        html = plots.chart_html(spec)  # what the pipeline puts in the page
        start = html.index(">", html.index("<script")) + 1
        assert json.loads(html[start:html.index("</script>")]) == spec


def _params(spec):
    if isinstance(spec, dict):
        yield from spec.get("params", [])
        for v in spec.values():
            yield from _params(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _params(v)


def test_ablation_chart_needs_every_subset():
    with pytest.raises(ValueError, match="no row"):
        plots.ablation_explorer_chart([{"classes": ["A"], "F(C)": 1.0, "F(M)": 2.0}], ["A"])


def test_choosing_a_head_redraws_its_attention(browser, tmp_path):
    page = chart_page(tmp_path, example_charts())
    assert browser.open(page) == ["drawn", "drawn", "drawn"]
    assert browser.js(f"{OPTIONS}(0)") == [f"{l}.{h}" for l in range(3) for h in range(4)]
    before, texts = browser.js(f"{DRAWN}(0)"), browser.js(f"{TEXTS}(0)")
    assert any(t.startswith("head 2.1 | class: Name Mover, S-Inhibition") for t in texts)
    choose(browser, 0, "0.3")
    after, texts = browser.js(f"{DRAWN}(0)"), browser.js(f"{TEXTS}(0)")
    assert after != before
    assert any(t.startswith("head 0.3 | class: none") for t in texts)
    assert "1 Mary" in texts and "3 Ann" in texts  # both prompts' tokens label the patterns


def test_choosing_an_experiment_redraws_the_heatmap(browser, tmp_path):
    browser.open(chart_page(tmp_path, example_charts()))
    before = browser.js(f"{DRAWN}(1)")
    assert "to the logits" in browser.js(f"{TEXTS}(1)")
    choose(browser, 1, "q of Name Mover")
    after = browser.js(f"{DRAWN}(1)")
    assert after != before and "q of Name Mover" in browser.js(f"{TEXTS}(1)")


def test_ticking_classes_redraws_faithfulness(browser, tmp_path):
    browser.open(chart_page(tmp_path, example_charts()))
    texts = browser.js(f"{TEXTS}(2)")
    assert "4.00" in texts and "F(C)/F(M) = 1.000   (kept: A, B)" in texts
    click_checkbox(browser, 2, 0)  # untick A
    texts = browser.js(f"{TEXTS}(2)")
    assert "F(C)/F(M) = 0.750   (kept: B)" in texts and "3.00" in texts


def test_hovering_a_cell_names_the_head_and_its_class(browser, tmp_path):
    browser.open(chart_page(tmp_path, example_charts()))
    tip = hover_cell(browser, 1, 9)  # cell 9 of the layer x head grid: head 2.1
    assert "2.1" in tip and "Name Mover, S-Inhibition" in tip


# ----------------------------------------------------------------------------- the book


def test_the_book_shows_widgets_as_charts_and_loads_no_widget_code():
    config = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"]
    assert ["html", "application/vnd.jupyter.widget-view+json", None] in config["nb_mime_priority_overrides"]
    assert config["nb_ipywidgets_js"] == {}
    launch = yaml.safe_load((REPO / "_config.yml").read_text())["launch_buttons"]
    assert launch["colab_url"] and launch["binderhub_url"]
    assert config["html_theme_options"]["use_download_button"] is True
    assert "book/explore" in pipeline.toc_files(pipeline.read_toc())


@pytest.mark.book
def test_built_explore_page_is_interactive_offline(built_book, browser):
    page = built_book / "html" / "book" / "explore.html"
    html = page.read_text()
    assert "widget-view+json" not in html and "embed-amd" not in html and "VBox(" not in html
    states = browser.open(page)
    assert len(states) >= 6 and set(states) == {"drawn"}, states  # 3 charts + 3 explorers
    selects = [i for i in range(len(states)) if browser.js(f"{OPTIONS}(i)".replace("(i)", f"({i})"))]
    assert selects, "no chart with a dropdown on the explore page"
    first = selects[0]  # the head picker
    options = browser.js(f"{OPTIONS}({first})")
    before = browser.js(f"{DRAWN}({first})")
    choose(browser, first, options[-1] if options[-1] != options[0] else options[1])
    assert browser.js(f"{DRAWN}({first})") != before


@pytest.mark.book
def test_built_pages_carry_launch_and_download_buttons(built_book):
    pages = sorted((built_book / "html" / "book").glob("*.html"))
    notebooks = [p for p in pages if (built_book / "site" / "book" / f"{p.stem}.ipynb").exists()]
    assert notebooks
    for page in notebooks:
        html = page.read_text()
        assert "colab.research.google.com/github/" in html, page.name
        assert "mybinder.org/v2/gh/" in html, page.name
        assert f"_sources/book/{page.stem}.ipynb" in html, page.name
