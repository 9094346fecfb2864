"""Charts really draw, offline, in headless Chromium.

A page is loaded from disk with every host name unresolvable, and the DOM after the scripts ran
is parsed: each ``div.ioi-chart`` must hold an ``<svg>`` with Vega marks (or a ``<canvas>``).
Every built page's console is read too (:class:`Console`, the DevTools protocol on a pipe): no
uncaught exception, ``console.error`` or failed load. Without Chromium these tests skip, unless
``CI`` is set: then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from devtools import DevTools
from ioi_helpers import plots

BROWSERS = ("chromium", "chromium-browser")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def chromium() -> str:
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if found:
        return found
    if in_ci():
        pytest.fail("CI is set but Chromium is missing: apt-get install -y chromium (.ci/run does)")
    pytest.skip("Chromium is not installed (apt-get install -y chromium); required when CI is set")


def rendered_dom(browser: str, page: Path, tmp_path: Path) -> str:
    """The DOM of a local page after its scripts ran, with the network unreachable."""
    profile = tmp_path / f"profile-{page.stem}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
           "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0 and "</html>" in proc.stdout, f"chromium failed on {page}:\n{proc.stderr[-3000:]}"
    return proc.stdout


class Console(DevTools):
    """Headless Chromium (:class:`devtools.DevTools`) with the page's console, runtime and log
    events on; :meth:`errors` loads a page and returns what its console logged as an error."""

    def __init__(self, executable: str, profile: Path) -> None:
        super().__init__(executable, profile, enable=("Page", "Runtime", "Log"))

    def errors(self, page: Path, settle: float = 1.0, timeout: float = 60) -> list[str]:
        """Load ``page``; every error its console logged until ``settle`` s after the load event."""
        self.events = []
        self.navigate(page)
        deadline, loaded = time.monotonic() + timeout, None
        while loaded is None or time.monotonic() < loaded + settle:
            if loaded is None and any(e["method"] == "Page.loadEventFired" for e in self.events):
                loaded = time.monotonic()
            if not self.read(min(deadline, (loaded or deadline) + settle)) and loaded is None:
                raise TimeoutError(f"{page.name} did not load within {timeout}s")
            self.events += [m for m in self.messages() if "method" in m]
        return [text for text in map(console_error, self.events) if text]


def console_error(event: dict) -> str | None:
    """The text of a DevTools event that is a console error (an uncaught exception, a
    ``console.error``/``console.assert``, a resource that failed to load), else None."""
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text", "")
        where = f"{details.get('url', '')}:{details.get('lineNumber', 0) + 1}"
        return f"{text.splitlines()[0] if text else 'exception'} ({where})"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = params.get("args", [])
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args)
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        return f"{params['entry'].get('text', '')} ({params['entry'].get('url', '')})"
    return None


@pytest.fixture(scope="session")
def console(chromium, tmp_path_factory):
    reader = Console(chromium, tmp_path_factory.mktemp("console-profile"))
    yield reader
    reader.close()


def chart_report(dom: str) -> list[dict]:
    """One dict per ``div.ioi-chart``: whether it holds drawn Vega marks, and any error text."""
    charts: list[dict] = []
    stack: list[tuple[str, dict | None]] = []  # (tag, the chart it opened, if any)

    def current() -> dict | None:
        return next((c for _, c in reversed(stack) if c is not None), None)

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            classes = (dict(attrs).get("class") or "").split()
            chart = current()
            opened = None
            if tag == "div" and "ioi-chart" in classes:
                opened = {"svg_marks": False, "canvas": False, "error": "ioi-chart-error" in classes}
                charts.append(opened)
            elif chart is not None:
                if tag == "canvas":
                    chart["canvas"] = True
                if tag == "g" and "role-mark" in classes and any(t == "svg" for t, _ in stack):
                    chart["svg_marks"] = True
            if tag not in VOID:
                stack.append((tag, opened))

        def handle_endtag(self, tag):
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][0] == tag:
                    del stack[i:]
                    break

    Parser().feed(dom)
    return charts


def undrawn(charts: list[dict]) -> list[int]:
    return [i for i, c in enumerate(charts) if c["error"] or not (c["svg_marks"] or c["canvas"])]


def chart_page(folder: Path, with_bundle: bool = True) -> Path:
    """A page with one chart of each builder, loading the book's scripts from beside it."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"group": list("abcd"), "x.value": rng.normal(size=4), "y": rng.normal(size=4)})
    charts = [
        plots.head_heatmap(rng.normal(size=(12, 12)), "heads", "effect", highlight=["9.9", (10, 7)]),
        plots.bar_chart(df, "group", "x.value", color="group"),
        plots.histogram(df, "y"),
        plots.scatter_with_diagonal(df, "x.value", "y", color="group"),
    ]
    shutil.copy(REPO / "book" / "_static" / "ioi-charts.js", folder)
    scripts = '<script src="ioi-charts.js"></script>'
    if with_bundle:
        (folder / "vega-bundle.js").write_text(plots.vega_bundle())
        scripts = '<script src="vega-bundle.js"></script>' + scripts
    body = "\n".join(plots.chart_html(c.to_dict()) for c in charts)
    page = folder / "charts.html"
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8">{scripts}</head>'
                    f"<body>{body}</body></html>")
    return page


def test_charts_draw_offline(chromium, tmp_path):
    charts = chart_report(rendered_dom(chromium, chart_page(tmp_path), tmp_path))
    assert len(charts) == 4
    assert undrawn(charts) == []


def test_check_notices_charts_that_did_not_draw(chromium, tmp_path):
    charts = chart_report(rendered_dom(chromium, chart_page(tmp_path, with_bundle=False), tmp_path))
    assert len(charts) == 4 and undrawn(charts) == [0, 1, 2, 3]
    assert all(c["error"] for c in charts)


def test_remote_data_is_refused():
    with pytest.raises(ValueError, match="network"):
        plots.chart_html({"data": {"url": "https://example.org/data.csv"}, "mark": "bar"})
    plots.check_offline({"$schema": "https://vega.github.io/schema/vega-lite/v6.json"})


@pytest.mark.book
def test_every_chart_in_the_built_book_draws(planted_book, chromium, tmp_path):
    pages = sorted((planted_book / "html" / "book").glob("*.html"))
    assert pages, "the built book has no pages under book/"
    total, failures = 0, []
    for page in pages:
        html = page.read_text()
        assert "cdn.jsdelivr.net/npm/vega" not in html, f"{page.name} loads Vega from a CDN"
        charts = chart_report(rendered_dom(chromium, page, tmp_path))
        total += len(charts)
        failures += [f"{page.name}: chart {i + 1} of {len(charts)}" for i in undrawn(charts)]
    assert failures == [], f"charts that did not draw: {failures}"
    assert total > 0, "no chart in the whole book: the check would be vacuous"


def test_console_check_catches_every_kind_of_error(console, tmp_path):
    page = tmp_path / "errors.html"
    page.write_text('<!doctype html><html><head><script>const X = 1;</script><script>const X = 2;</script>'
                    '<script>console.error("drawn badly", 3)</script><script src="missing.js"></script>'
                    '</head><body>text</body></html>')
    errors = console.errors(page)
    assert len(errors) == 3, errors
    assert any(e.startswith("SyntaxError: Identifier 'X' has already been declared (") for e in errors)
    assert "console.error: drawn badly 3" in errors
    assert any("ERR_FILE_NOT_FOUND" in e and "missing.js" in e for e in errors)
    page.write_text('<!doctype html><html><head><script>const X = 1; console.log("fine")</script></head></html>')
    assert console.errors(page) == []


def console_failures(html: Path, console: Console) -> dict[str, list[str]]:
    """Each page of a built book under ``book/`` that logged a console error, with its errors."""
    pages = sorted(html.glob("book/*.html"))
    assert pages, "the built book has no pages under book/"
    return {page.name: errors for page in pages if (errors := console.errors(page))}


def test_the_pages_log_no_console_error(unexecuted_book, console):
    """Every page built from the committed notebooks (the same config, theme and scripts as the
    executed book, in seconds) loads without a console error."""
    assert console_failures(unexecuted_book, console) == {}


@pytest.mark.book
def test_the_executed_books_pages_log_no_console_error(planted_book, console):
    """The same for the executed books (ioi-planted, gpt2-planted), whose pages also draw charts."""
    assert console_failures(planted_book / "html", console) == {}


def test_a_long_chart_title_is_broken_into_lines_that_fit_the_column():
    """plots.show draws a chart through plots.fitted: a title longer than TITLE_CHARS becomes
    lines of at most that many characters, word by word, with every word kept; a short title,
    or one already given as lines, is left alone."""
    long = ("Repeated random tokens: 50 sequences of 20 random tokens x 2, BOS not prepended; "
            "outlined: heads kept above")
    chart = alt.vconcat(alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x:Q"),
                        title=long)
    lines = plots.fitted(chart).to_dict()["title"]
    assert isinstance(lines, list) and len(lines) == 2
    assert all(len(line) <= plots.TITLE_CHARS for line in lines)
    assert " ".join(lines) == long
    short = alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x:Q").properties(title="short")
    assert plots.fitted(short).to_dict()["title"] == "short"
    given = short.properties(title=["one", "two"])
    assert plots.fitted(given).to_dict()["title"] == ["one", "two"]
