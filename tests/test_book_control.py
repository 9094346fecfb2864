"""The negative-control book: every chapter executed on ``gpt2-random`` (GPT-2 small's shape,
seeded random weights, no circuit) at the smallest sizes (the ``built_control_book`` fixture).

Each chapter must run to the end through its fallback path, record that the model does not do
the task and that no head class was found, and say so on its page. Chapter 9's head scores,
which it records on any model, must rank the paper's heads no better than chance: the AUC is
recomputed here by counting pairs, against :data:`ioi_helpers.paper.CIRCUIT` (gpt2-random has
GPT-2 small's shape, so the paper's heads name heads of this model, with no circuit behind them).
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from conftest import CONTROL_SIZES, CONTROL_TEST_MODEL
from test_book_planted import CHAPTER_CLASSES
from ioi_helpers import metrics, paper

pytestmark = pytest.mark.book

# What each page says, on gpt2-random, about the task or the class it looks for (the pages'
# own wording, computed from the chapter's results in a hidden cell).
SAYS = {
    "02_name_movers": r"does not do the task",
    "03_s_inhibition": r"does not do the task",
    "04_induction_and_duplicate_token": r"No S-Inhibition heads were found",
    "05_previous_token": r"No Induction heads were found",
    "06_backup_name_movers": r"No Name Movers were found",
    "07_circuit_evaluation": r"does not do the task",
    "08_adversarial_examples": r"No S-Inhibition heads were found",
}


def _values(book, chapter: str) -> dict:
    return json.loads((book / "results" / f"{chapter}.json").read_text())["values"]


def _shown(book, chapter: str) -> str:
    """The text a reader sees in a chapter's outputs (Markdown and plain text)."""
    nb = nbformat.read(book / "executed" / f"{chapter}.ipynb", as_version=4)
    return "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_every_chapter_ran_on_gpt2_random_in_one_run(built_control_book):
    from ioi_helpers import results

    recorded = results.load_all(built_control_book / "results", one_run=True)
    assert not recorded.notes, recorded.notes
    assert set(CHAPTER_CLASSES) | {"01_task", "07_circuit_evaluation", "08_adversarial_examples",
                                   "09_automated_discovery"} <= set(recorded)
    for chapter, data in recorded.items():
        assert results.model_id(data["provenance"]["model"]) == CONTROL_TEST_MODEL, chapter
    assert _values(built_control_book, "01_task")["baseline.logit_diff"]["settings"]["N"] == CONTROL_SIZES["n_prompts"]


def test_the_control_does_not_do_the_task(built_control_book):
    """Chapter 1's recorded baseline fails the book's task criterion (metrics.does_task):
    a mean logit difference at or below 0, or the IO above S on fewer than 60% of prompts."""
    v = _values(built_control_book, "01_task")
    ld, above = v["baseline.logit_diff"]["value"], v["baseline.io_above_s"]["value"]
    assert not (ld > 0 and above >= metrics.TASK_MIN_IO_ABOVE_S), (ld, above)
    assert abs(ld) < 1.0, ld  # GPT-2 small: 3.56; a random model has no preference


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_no_class_is_found(built_control_book, chapter):
    values = _values(built_control_book, chapter)
    for name in CHAPTER_CLASSES[chapter]:
        assert values[f"classes.{name}"]["value"] == [], f"{chapter}: {name}"


def test_chapter_7_has_an_empty_circuit(built_control_book):
    v = _values(built_control_book, "07_circuit_evaluation")
    assert v["circuit.heads"]["value"] == [] and v["circuit.naive.heads"]["value"] == []


@pytest.mark.parametrize("chapter", list(SAYS))
def test_the_page_says_so(built_control_book, chapter):
    shown = _shown(built_control_book, chapter)
    assert CONTROL_TEST_MODEL in shown and "not GPT-2 small" in shown, chapter
    assert re.search(SAYS[chapter], shown), f"{chapter}: no {SAYS[chapter]!r} in its outputs"


def _auc_by_pairs(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_chapter_9_ranks_the_paper_heads_at_chance(built_control_book):
    """Every head-scoring method of chapter 9 on gpt2-random, against the paper's 26 heads: the
    AUC is near 0.5 (no circuit to find). The band is wide because 26 of 144 heads and 20
    prompts give a noisy AUC; a method that found the paper's heads would score near 1."""
    v = _values(built_control_book, "09_automated_discovery")
    grids = {k.split(".")[1]: e["value"] for k, e in v.items() if k.endswith(".head_scores")}
    assert {"attribution", "eap_heads"} <= set(grids), grids.keys()
    truth = {tuple(h) for hs in paper.CIRCUIT.values() for h in hs}
    for method, grid in grids.items():
        heads = [(l, h) for l in range(len(grid)) for h in range(len(grid[l]))]
        auc = _auc_by_pairs([abs(grid[l][h]) for l, h in heads], [hd in truth for hd in heads])
        assert 0.3 < auc < 0.7, (method, auc)
