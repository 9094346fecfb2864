"""Formulas render offline: the built book loads MathJax from its own ``_static``, never a CDN.

A one-page book is built with the real ``_config.yml`` and the pipeline's staging, then opened in
headless Chromium with every host name unresolvable: MathJax must have typeset the page's TeX
(``mjx-container`` elements, no ``mjx-merror``). Without Chromium the browser test skips, unless
``CI`` is set (the ``chromium`` fixture of test_book_render).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ioi_helpers import pipeline
from test_book_render import chromium, rendered_dom  # noqa: F401  (the fixture)

PAGE = r"""# Formulas

The logit difference of a prompt is

$$
\mathrm{logit\_diff} = \mathrm{logit}(\mathrm{IO}) - \mathrm{logit}(\mathrm{S})
$$

and the circuit keeps $F(C) / F(M)$ of it.
"""
CDN = re.compile(r"https?://[^\"' ]*(jsdelivr|cdnjs|unpkg|mathjax\.org)[^\"' ]*mathjax", re.I)


@pytest.fixture(scope="module")
def math_book(tmp_path_factory) -> Path:
    """A one-page book (the real config, a page with TeX) built by the pipeline; its html/."""
    root = tmp_path_factory.mktemp("mathbook")
    (root / "book").mkdir()
    shutil.copy(REPO / "_config.yml", root)
    shutil.copy(REPO / "book" / "references.bib", root / "book")
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro"}))
    (root / "book" / "intro.md").write_text(PAGE)
    return pipeline.build_book([], root / "out", root)


def test_config_loads_mathjax_from_static():
    config = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"]
    path = config["mathjax_path"]
    assert "://" not in path and not path.startswith("/")  # relative: the book's _static
    assert (pipeline.mathjax_source() / path.removeprefix("mathjax/")).exists()


def test_built_page_references_no_mathjax_cdn(math_book):
    html = (math_book / "book" / "intro.html").read_text()
    assert not CDN.search(html), CDN.search(html)
    assert '_static/mathjax/tex-mml-chtml.js' in html
    assert (math_book / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    # MathJax's CommonHTML fonts travel with it (it loads them relative to its script)
    assert list((math_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def test_formulas_render_with_the_network_off(math_book, chromium, tmp_path):  # noqa: F811
    dom = rendered_dom(chromium, math_book / "book" / "intro.html", tmp_path)
    assert dom.count("<mjx-container") == 2, "MathJax typeset no formula (did it load?)"
    assert "<mjx-merror" not in dom
    assert "mjx-c" in dom  # glyphs were laid out by the CommonHTML output


@pytest.mark.book
def test_the_chapters_formulas_render_offline(built_book, chromium, tmp_path):  # noqa: F811
    """Every chapter whose source writes display math shows it typeset, with no TeX error."""
    pages = [p for p in pipeline.chapter_paths() if "$$" in p.read_text()]
    assert len(pages) >= 3  # chapters 1, 2 and 7 define the paper's quantities as formulas
    for chapter in pages:
        dom = rendered_dom(chromium, built_book / "html" / "book" / f"{chapter.stem}.html", tmp_path)
        assert dom.count("<mjx-container") >= chapter.read_text().count("$$") // 2, chapter.stem
        assert "<mjx-merror" not in dom, chapter.stem
