"""Nothing on a page is cut off: at a 1280 x 1200 window every element of the content column
(``article.bd-article``) fits the column, and no table cell is truncated by pandas.

Each built page is opened in headless Chromium (:class:`Layout`, the DevTools protocol on a
pipe), its charts are drawn and its formulas typeset, then a script walks the column's
elements: an element reaching past the column's left or right edge, or one that scrolls
sideways (``overflow-x`` auto or scroll with content wider than its box), is reported with its
tag, width and first words. Only the outermost offender of a nest is named. The first test
shows the check on a page built to break it. Without Chromium these tests skip, unless ``CI``
is set: then they fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import DevTools
from test_book_render import chromium  # noqa: F401  (the fixture: skip or fail without Chromium)

WINDOW = (1280, 1200)  # the reader's window of issue 23: wide laptop, page TOC shown

OFFENDERS = r"""
(() => {
  const column = document.querySelector('article.bd-article');
  if (!column) return null;
  const edge = column.getBoundingClientRect();
  const found = [], flagged = new Set();
  for (const el of column.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden') continue;
    const past = Math.max(box.right - edge.right, edge.left - box.left);
    // content wider than its box: scrolled sideways (overflow auto/scroll), cut off
    // (hidden/clip), or drawn past it (visible)
    // (boxes only: an inline element or an SVG shape has no width of its own to overflow)
    // MathJax lays glyphs out in its own mjx-* elements: of those, a display formula counts
    const tag = el.tagName.toLowerCase();
    const formula = tag === 'mjx-container' && el.getAttribute('display') === 'true';
    const box_like = formula || (el instanceof HTMLElement && !tag.startsWith('mjx-') &&
                                 !style.display.startsWith('inline'));
    const scrolls = box_like ? el.scrollWidth - el.clientWidth : 0;
    if (past <= 1 && scrolls <= 1) continue;
    flagged.add(el);
    let up = el.parentElement, inner = false;
    while (up && up !== column) { if (flagged.has(up)) { inner = true; break; } up = up.parentElement; }
    if (inner) continue;
    const words = (el.innerText || el.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 60);
    found.push(`<${el.tagName.toLowerCase()}> ${Math.round(box.width)} px wide, ` +
               `${Math.round(Math.max(past, scrolls))} px past the ${Math.round(edge.width)}-px ` +
               `column: "${words}"`);
  }
  return found;
})()
"""

# Settled when every chart has drawn (or failed: test_book_render reports that) and MathJax,
# where the page loads it, has typeset.
SETTLED = r"""
(async () => {
  if (document.readyState !== 'complete') return false;
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    await window.MathJax.startup.promise;
  }
  return Array.from(document.querySelectorAll('div.ioi-chart')).every(
    c => c.dataset.ioiChart === 'drawn' || c.classList.contains('ioi-chart-error'));
})()
"""

# pandas cuts a long cell to display.max_colwidth (50) characters, the last three "..."
TRUNCATED = r"""
(() => Array.from(document.querySelectorAll('article.bd-article td'))
  .map(td => td.innerText.trim()).filter(t => t.endsWith('...')))()
"""


MIN_CHART_SCALE = 0.65  # below this a chart's 12-px labels read at under 8 px
SHRUNK = r"""
(() => Array.from(document.querySelectorAll('article.bd-article svg.marks')).map(svg => {
  const own = parseFloat(svg.getAttribute('width')), drawn = svg.getBoundingClientRect().width;
  return [own, drawn];
}).filter(([own, drawn]) => own > 0 && drawn / own < %s).map(([own, drawn]) =>
  `chart of ${Math.round(own)} px drawn at ${(drawn / own).toFixed(2)} of its width`))()
"""


class Layout(DevTools):
    """Headless Chromium at the reader's window size; :meth:`offenders` lists what a page
    shows past its column, :meth:`truncated` the table cells pandas cut short, :meth:`shrunk`
    the charts scaled down too far to fit."""

    def __init__(self, executable: str, profile: Path) -> None:
        super().__init__(executable, profile, enable=("Page",), width=WINDOW[0], height=WINDOW[1])

    def load(self, page: Path, timeout: float = 60) -> None:
        self.navigate(page)
        deadline = time.monotonic() + timeout
        while not self.js(SETTLED):
            if time.monotonic() > deadline:
                state = self.js("document.readyState + ' ' + location.href")
                raise TimeoutError(f"{page.name}: charts or formulas not done within "
                                   f"{timeout}s ({state})")
            time.sleep(0.2)
        time.sleep(0.3)  # one more layout pass after the last chart

    def offenders(self, page: Path) -> list[str]:
        self.load(page)
        found = self.js(OFFENDERS)
        assert found is not None, f"{page.name} has no article.bd-article: the check would see nothing"
        return found

    def truncated(self) -> list[str]:
        return self.js(TRUNCATED)

    def shrunk(self) -> list[str]:
        """Charts the stylesheet had to shrink below MIN_CHART_SCALE of their own width to fit
        the column: sized for a wider page, their text reads too small."""
        return self.js(SHRUNK % MIN_CHART_SCALE)


@pytest.fixture(scope="module")
def layout(chromium, tmp_path_factory):  # noqa: F811  (the imported fixture)
    browser = Layout(chromium, tmp_path_factory.mktemp("layout-profile"))
    yield browser
    browser.close()


def _page(folder: Path, body: str) -> Path:
    page = folder / "page.html"
    page.write_text('<!doctype html><html><head><meta charset="utf-8"><style>'
                    "body { margin: 0 } article.bd-article { width: 600px; margin-left: 100px }"
                    "div.scroll { overflow-x: auto }</style></head>"
                    f'<body><article class="bd-article">{body}</article></body></html>')
    return page


def test_the_check_finds_what_reaches_past_the_column(layout, tmp_path):
    wide_table = "<table><tr>" + "<td>cell</td>" * 100 + "</tr></table>"
    long_line = "<pre style='white-space: pre'>" + "x = 1; " * 60 + "</pre>"
    wide_svg = "<svg width='900' height='40'></svg>"
    scrolled = f"<div class='scroll'><div style='width: 1200px'>inside a scroll box</div></div>"
    found = layout.offenders(_page(tmp_path, wide_table + long_line + wide_svg + scrolled))
    assert len(found) == 4, found
    assert found[0].startswith("<table>") and "cell cell" in found[0]
    assert found[1].startswith("<pre>") and "x = 1;" in found[1]
    assert found[2].startswith("<svg> 900 px wide, 300 px past the 600-px column")
    assert found[3].startswith("<div>") and "inside a scroll box" in found[3]


def test_the_check_passes_what_fits(layout, tmp_path):
    fits = ("<table><tr><td>a</td><td>b</td></tr></table><pre>short</pre>"
            "<svg width='600' height='40'></svg><div class='scroll'>narrow</div>")
    assert layout.offenders(_page(tmp_path, fits)) == []


def test_the_book_css_wraps_what_would_overflow(layout, tmp_path):
    """The same overflowing page with the book's stylesheet: code, printed output and tables
    wrap, charts scale down (the chart's SVG as Vega writes it, with a viewBox)."""
    css = (Path(__file__).parents[1] / "book" / "_static" / "ioi-book.css").read_text()
    body = ("<div class='cell_output'><table><tr>" + "<td>a-long-cell-of-text</td>" * 30
            + "</tr></table><pre>" + "x = 1; " * 60 + "</pre></div>"
            "<div class='ioi-chart' data-ioi-chart='drawn'><div class='vega-embed'><svg class='marks' width='900' "
            "height='40' viewBox='0 0 900 40'></svg></div></div>")
    page = _page(tmp_path, body)
    before = layout.offenders(page)
    assert len(before) == 2 and "a-long-cell" in before[0] and "300 px past" in before[1], before
    page.write_text(page.read_text().replace("</head>", f"<style>{css}</style></head>"))
    assert layout.offenders(page) == []
    assert layout.shrunk() == []  # 900 px into 600: drawn at 0.67 of its width


def test_a_chart_shrunk_too_far_is_reported(layout, tmp_path):
    """A chart twice the column's width fits once the stylesheet scales it, but at half size:
    reported, with the scale it was drawn at."""
    css = (Path(__file__).parents[1] / "book" / "_static" / "ioi-book.css").read_text()
    page = _page(tmp_path, "<div class='ioi-chart' data-ioi-chart='drawn'><div class='vega-embed'>"
                           "<svg class='marks' width='1200' height='40' viewBox='0 0 1200 40'>"
                           "</svg></div></div>")
    page.write_text(page.read_text().replace("</head>", f"<style>{css}</style></head>"))
    assert layout.offenders(page) == []
    assert layout.shrunk() == ["chart of 1200 px drawn at 0.50 of its width"]


def _failures(html: Path, layout: Layout) -> dict[str, list[str]]:
    pages = sorted(html.glob("book/*.html")) + [html / "index.html"]
    assert len(pages) > 1, f"no built pages under {html}"
    failures = {}
    for page in pages:
        found = (layout.offenders(page) + [f"truncated cell: {t!r}" for t in layout.truncated()]
                 + layout.shrunk())
        if found:
            failures[page.name] = found
    return failures


def test_the_pages_fit_their_column(unexecuted_book, layout):
    """Every page built from the committed notebooks: the Markdown pages (front page, how the
    book is tested) and the chapters' code as a reader sees it before running it."""
    assert _failures(unexecuted_book, layout) == {}


@pytest.mark.book
def test_the_executed_books_pages_fit_their_column(planted_book, layout):
    """The executed books (ioi-planted; gpt2-planted, the published book's shape): every chart,
    table, printed line and formula fits the column, and no table cell is cut short."""
    assert _failures(planted_book / "html", layout) == {}


def test_tables_show_whole_cells():
    """Importing the plots module (every chapter does) makes a notebook show a long table cell
    whole: a template of 80 characters is not cut to 50 and "...". Run in a fresh interpreter,
    so no option another test set can make it pass."""
    template = "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]" + " x" * 6
    code = ("import pandas as pd, ioi_helpers.plots, sys; "
            f"sys.stdout.write(pd.DataFrame({{'template': [{template!r}]}})._repr_html_())")
    html = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert template in html and "..." not in html


def raw_values(executed: Path) -> dict[str, list[str]]:
    """Cells whose result is a bare Python value (a list, a dict, a number as its repr: an
    ``execute_result`` with nothing but ``text/plain``), by notebook: a reader would see the
    dump. Tables, charts and glued text all carry a richer type."""
    found = {}
    for nb in sorted(executed.glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        dumps = [f"cell {i}: " + "".join(o["data"]["text/plain"])[:80]
                 for i, c in enumerate(cells) if c["cell_type"] == "code"
                 for o in c.get("outputs", [])
                 if o.get("output_type") == "execute_result" and set(o["data"]) == {"text/plain"}]
        if dumps:
            found[nb.stem] = dumps
    return found


def test_the_raw_value_check_finds_a_dump(tmp_path):
    cell = {"cell_type": "code", "source": "record(...)", "metadata": {}, "outputs": [
        {"output_type": "execute_result", "data": {"text/plain": "[{'K': 'random 0'}]"},
         "metadata": {}, "execution_count": 1}]}
    table = {"cell_type": "code", "source": "df", "metadata": {}, "outputs": [
        {"output_type": "execute_result", "data": {"text/plain": "df", "text/html": "<table>"},
         "metadata": {}, "execution_count": 2}]}
    (tmp_path / "page.ipynb").write_text(json.dumps({"cells": [table, cell]}))
    assert raw_values(tmp_path) == {"page": ["cell 1: [{'K': 'random 0'}]"]}


@pytest.mark.book
def test_no_page_shows_a_raw_python_value(planted_book):
    assert raw_values(planted_book / "executed") == {}
