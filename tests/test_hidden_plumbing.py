"""The built pages show the science and fold the plumbing: every chapter's set-up cell (model
loading, ``results.start``, the scorecard's ``results.load_all``) has its code collapsed
(``hide-input``) or removed (``remove-input``), while the cells that perform the experiment
stay open. Checked on the HTML that Jupyter Book writes, and on the sources.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from ioi_helpers import pipeline

HIDDEN = ("hide-input", "remove-input", "remove-cell")
# set-up calls, as the source has them and as Pygments marks them up in the HTML
SETUP = {"models.load_model(": '<span class="n">load_model</span>',
         "results.start(": '<span class="n">results</span><span class="o">.</span><span class="n">start</span>',
         "results.load_all(": '<span class="n">load_all</span>'}
# experiment calls that must stay visible
SCIENCE = {"01_task": '<span class="n">end_logits</span>',
           "02_name_movers": '<span class="n">direct_effects</span>'}
CELL = re.compile(r'<div class="cell( [^"]*)? docutils container">')


def cells(html: str) -> list[tuple[list[str], str]]:
    """Each code cell of a page: its tags (from ``tag_*`` classes) and its HTML."""
    starts = [(m.start(), m.group(1) or "") for m in CELL.finditer(html)]
    out = []
    for (start, classes), end in zip(starts, [s for s, _ in starts[1:]] + [len(html)]):
        tags = [c.removeprefix("tag_") for c in classes.split() if c.startswith("tag_")]
        out.append((tags, html[start:end]))
    return out


def folded(tags: list[str], cell: str) -> bool:
    """The code is not on show: removed, or inside a closed ``<details>`` above the input."""
    if "hide-input" in tags:
        return cell.index('<details class="admonition hide above-input">') < cell.index("cell_input")
    return any(t in tags for t in HIDDEN) and "cell_input" not in cell


def check_pages(html_dir: Path) -> int:
    """Assert the rule on every chapter page; the number of set-up cells checked."""
    checked, shown = 0, []
    for chapter in pipeline.chapter_paths():
        page = html_dir / "book" / f"{chapter.stem}.html"
        source = chapter.read_text()
        html = page.read_text()
        for call, markup in SETUP.items():
            if call not in source:
                continue
            hits = [(tags, cell) for tags, cell in cells(html) if markup in cell]
            assert hits, f"{page.name}: no cell with {call} in the HTML"
            shown += [f"{page.name}: {call}" for tags, cell in hits if not folded(tags, cell)]
            checked += len(hits)
        if chapter.stem in SCIENCE:
            science = [tags for tags, cell in cells(html) if SCIENCE[chapter.stem] in cell]
            assert science and not any(t in HIDDEN for tags in science for t in tags), page.name
    assert shown == [], f"set-up code on show: {shown}"
    return checked


def test_setup_cells_are_tagged_in_the_sources():
    bare = []
    for chapter in pipeline.chapter_paths():
        for cell in pipeline.load_chapter(chapter).cells:
            if cell.cell_type == "code" and any(call in cell.source for call in SETUP):
                if not any(t in HIDDEN for t in cell.metadata.get("tags", [])):
                    bare.append(f"{chapter.name}: {cell.source.splitlines()[0]}")
    assert bare == []


def test_setup_code_is_folded_in_the_built_pages(unexecuted_book):
    assert check_pages(unexecuted_book) >= len(pipeline.chapter_paths())


@pytest.mark.book
def test_setup_code_is_folded_in_the_executed_book(built_book):
    assert check_pages(built_book / "html") >= len(pipeline.chapter_paths())


def test_staging_folds_the_injected_parameters(tmp_path):
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "_config.yml").write_text((pipeline.ROOT / "_config.yml").read_text())
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/ch\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "book" / "ch.py").write_text('# %% tags=["parameters"]\nmodel_name = None\n')
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("model_name = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('model_name = "ioi-tiny"', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "ch.ipynb")
    site = pipeline.stage_book([tmp_path / "ch.ipynb"], tmp_path / "out", root)
    staged = nbformat.read(site / "book" / "ch.ipynb", as_version=4)
    assert [c.metadata.get("tags") for c in staged.cells] == [
        ["parameters"], ["injected-parameters", "hide-input"], None]
