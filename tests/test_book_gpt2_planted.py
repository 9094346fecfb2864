"""The whole book executed on ``gpt2-planted`` (the ``built_paper_layout_book`` fixture): the
offline rehearsal of the published GPT-2 book.

gpt2-planted has GPT-2 small's shape with the paper's 26 heads planted at the paper's positions,
so every branch the book takes for "the paper's head layout" runs here, as it will on GPT-2
small: each discovery chapter must recover exactly the paper's heads (the planted truth), take
its main path, and the scorecard must compare them with the paper head by head. The truth is
:data:`ioi_helpers.paper.CIRCUIT`, the positions the construction plants at; nothing a chapter
computed stands in for it.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from conftest import PAPER_LAYOUT_TEST_MODEL
from ioi_helpers import paper
from test_book_planted import CHAPTER_CLASSES, main_path_failures

# The whole book at GPT-2 small's shape on 2 CPU cores is long: about an hour at the ioi-planted
# book's sizes (README). It runs here at conftest.PAPER_LAYOUT_SIZES (50 prompts, smaller
# searches, chapter 9's ACDC-style walk on 6 prompts), which fit CI's 90 minutes beside the rest.
pytestmark = pytest.mark.book


def _values(book, chapter: str) -> dict:
    return json.loads((book / "results" / f"{chapter}.json").read_text())["values"]


def test_every_chapter_ran_on_gpt2_planted_in_one_run(built_paper_layout_book):
    from ioi_helpers import results

    recorded = results.load_all(built_paper_layout_book / "results", one_run=True)
    assert not recorded.notes, recorded.notes
    assert set(CHAPTER_CLASSES) | {"01_task", "07_circuit_evaluation", "appendix_stand_in_model"} <= set(recorded)
    for chapter, data in recorded.items():
        assert results.model_id(data["provenance"]["model"]) == PAPER_LAYOUT_TEST_MODEL, chapter


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_chapter_recovers_exactly_the_paper_heads(built_paper_layout_book, chapter):
    values = _values(built_paper_layout_book, chapter)
    for name in CHAPTER_CLASSES[chapter]:
        found = sorted(tuple(h) for h in values[f"classes.{name}"]["value"])
        assert found == sorted(tuple(h) for h in paper.CIRCUIT[name]), f"{chapter}: {name}"


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_chapter_took_its_main_path(built_paper_layout_book, chapter):
    failed = main_path_failures(built_paper_layout_book, chapter)
    assert not failed, f"{chapter}: {failed}"


def test_every_page_carries_the_stand_in_note(built_paper_layout_book):
    """No gpt2-planted page may read as GPT-2 small's: each executed chapter that loads the
    model shows the gpt2-planted stand-in note."""
    note = paper.stand_in_note(f"{PAPER_LAYOUT_TEST_MODEL}(seed=0)")[:60]
    missing = []
    for chapter in CHAPTER_CLASSES:
        nb = nbformat.read(built_paper_layout_book / "executed" / f"{chapter}.ipynb", as_version=4)
        shown = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                          for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        if "gpt2-planted" not in shown or "not GPT-2 small" not in shown:
            missing.append(chapter)
    assert not missing and note


def test_appendix_reports_every_class_recovered(built_paper_layout_book):
    values = _values(built_paper_layout_book, "appendix_stand_in_model")
    assert values["planted.classes_recovered_exactly"]["value"] == 7
