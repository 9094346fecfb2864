"""The book executed on ``ioi-planted`` (the ``built_book`` fixture): every discovery chapter
recovers exactly the heads planted in the model, and none of them took its fallback path
("exploratory" receivers, steps "not run"), so the main branches of chapters 3-6 (Fig. 4c,
App. A's grid, the knockouts, the verdicts) really execute in CI.

The truth is taken from :func:`ioi_helpers.planted.choose_heads`, the builder's own draw of the
heads, not from anything a chapter computed or recorded."""

from __future__ import annotations

import json

import nbformat
import pytest

from conftest import BOOK_TEST_MODEL
from ioi_helpers import planted

pytestmark = pytest.mark.book

CHAPTER_CLASSES = {
    "02_name_movers": ("Name Mover", "Negative Name Mover"),
    "03_s_inhibition": ("S-Inhibition",),
    "04_induction_and_duplicate_token": ("Induction", "Duplicate Token"),
    "05_previous_token": ("Previous Token",),
    "06_backup_name_movers": ("Backup Name Mover",),
}
# Numbers each chapter records only on its main path (the class was found and the experiments
# after it ran); a key ending in "*" stands for any key with that prefix.
MAIN_PATH_KEYS = {
    "02_name_movers": ("name_movers.attention_to_io", "name_movers.copy_score",
                       "negative_name_movers.negative_copy_score"),
    "03_s_inhibition": ("s_inhibition.attention_to_s2", "s_inhibition.name_mover_attention_io_change",
                        "knockout.s_inhibition.at_end.logit_diff", "token_position.random_orig",
                        "token_position.inverted_inverted"),
    "04_induction_and_duplicate_token": ("knockout.*", "induction.share_of_s_inhibition_effect.*"),
    "05_previous_token": ("knockout.previous_token.logit_diff", "previous_token.previous_score_mean"),
    "06_backup_name_movers": ("backup.name_mover_knockout_drop", "backup.knockout_logit_diff"),
}


def test_the_book_runs_on_ioi_planted():
    assert BOOK_TEST_MODEL == "ioi-planted"


def _values(built_book, chapter: str) -> dict:
    return json.loads((built_book / "results" / f"{chapter}.json").read_text())["values"]


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_chapter_recovers_exactly_the_planted_heads(built_book, chapter):
    truth = planted.choose_heads(0)
    values = _values(built_book, chapter)
    for name in CHAPTER_CLASSES[chapter]:
        found = sorted(tuple(h) for h in values[f"classes.{name}"]["value"])
        assert found == sorted(map(tuple, truth[name])), f"{chapter}: {name}"


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_chapter_took_its_main_path(built_book, chapter):
    values = _values(built_book, chapter)
    assert not [k for k in values if k.startswith("exploratory.")], "a fallback (exploratory) result was recorded"
    for key in MAIN_PATH_KEYS[chapter]:
        if key.endswith("*"):
            hits = [k for k in values if k.startswith(key[:-1]) and values[k]["value"] is not None]
            assert hits, f"{chapter}: nothing recorded under {key}"
        else:
            assert values.get(key, {}).get("value") is not None, f"{chapter}: {key} missing or empty"
    nb = nbformat.read(built_book / "executed" / f"{chapter}.ipynb", as_version=4)
    shown = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for marker in ("exploratory receivers", "**Not run:**", "none found by the rule"):
        assert marker not in shown, f"{chapter} shows {marker!r}"


def test_appendix_reports_every_class_recovered(built_book):
    values = _values(built_book, "appendix_stand_in_model")
    assert values["planted.classes_recovered_exactly"]["value"] == 7
