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
# after it ran), each with what it shows on ioi-planted, which is built to have the paper's
# circuit: a check reads the chapter's values ``v`` (key -> value) and chapter 1's baseline
# logit diff ``base``.
MAIN_PATH_CHECKS = {
    "02_name_movers": {
        "Name Movers attend to IO": lambda v, base: v["name_movers.attention_to_io"] > 0.5,
        "Name Movers copy more than the average head":
            lambda v, base: v["name_movers.copy_score"] > v["name_movers.copy_score_average_head"] + 0.3,
        "Negative Name Movers copy negatively more than the average head":
            lambda v, base: v["negative_name_movers.negative_copy_score"]
            > v["negative_name_movers.negative_copy_score_average_head"] + 0.3,
    },
    "03_s_inhibition": {
        "S-Inhibition heads attend to S2": lambda v, base: v["s_inhibition.attention_to_s2"] > 0.5,
        "patching them lowers the Name Movers' attention to IO":
            lambda v, base: v["s_inhibition.name_mover_attention_io_change"] < -0.1,
        "knocking them out at END removes most of the logit diff":
            lambda v, base: v["knockout.s_inhibition.at_end.logit_diff"] < 0.5 * base,
        "App. A: a random token keeps the sign, both inverted flip it":
            lambda v, base: v["token_position.random_orig"] > 0 > v["token_position.inverted_inverted"],
    },
    "04_induction_and_duplicate_token": {
        "each knockout lowers the logit diff, both together most":
            lambda v, base: max(v["knockout.induction.logit_diff"], v["knockout.duplicate_token.logit_diff"])
            < 0.5 * v["knockout.none.logit_diff"]
            and v["knockout.induction_and_duplicate_token.logit_diff"]
            < min(v["knockout.induction.logit_diff"], v["knockout.duplicate_token.logit_diff"]),
        "Induction carries most of the S-Inhibition effect (App. A)":
            lambda v, base: v["induction.share_of_s_inhibition_effect.p_abc"] > 0.5,
    },
    "05_previous_token": {
        "knocking out the Previous Token heads removes most of the logit diff":
            lambda v, base: v["knockout.previous_token.logit_diff"] < 0.5 * v["knockout.none.logit_diff"],
        "they attend to the previous token": lambda v, base: v["previous_token.previous_score_mean"] > 0.5,
    },
    "06_backup_name_movers": {
        "the backups compensate: the Name Mover knockout costs little":
            lambda v, base: 0 <= v["backup.name_mover_knockout_drop"] < 0.3
            and v["backup.knockout_logit_diff"] > 0.5 * base,
        "knocking out the backups too costs much more":
            lambda v, base: v["backup.name_mover_and_backup_knockout_drop"]
            > v["backup.name_mover_knockout_drop"] + 0.5,
    },
}


def test_the_book_runs_on_ioi_planted(built_book):
    """Every chapter that records numbers recorded them on ioi-planted, all in one run (the
    provenance that the scorecard checks: nothing set aside)."""
    from ioi_helpers import results

    recorded = results.load_all(built_book / "results", one_run=True)
    assert not recorded.notes, recorded.notes
    assert set(CHAPTER_CLASSES) | {"01_task", "appendix_stand_in_model"} <= set(recorded)
    for chapter, data in recorded.items():
        assert results.model_id(data["provenance"]["model"]) == BOOK_TEST_MODEL, chapter


def _values(built_book, chapter: str) -> dict:
    return json.loads((built_book / "results" / f"{chapter}.json").read_text())["values"]


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_chapter_recovers_exactly_the_planted_heads(built_book, chapter):
    truth = planted.choose_heads(0)
    values = _values(built_book, chapter)
    for name in CHAPTER_CLASSES[chapter]:
        found = sorted(tuple(h) for h in values[f"classes.{name}"]["value"])
        assert found == sorted(map(tuple, truth[name])), f"{chapter}: {name}"


def main_path_failures(book, chapter: str) -> list[str]:
    """The MAIN_PATH_CHECKS claims of ``chapter`` that its recorded values in ``book`` fail
    (asserting first that no fallback result was recorded)."""
    values = _values(book, chapter)
    assert not [k for k in values if k.startswith("exploratory.")], "a fallback (exploratory) result was recorded"
    v = {k: e["value"] for k, e in values.items()}
    base = _values(book, "01_task")["baseline.logit_diff"]["value"]
    failed = []
    for claim, holds in MAIN_PATH_CHECKS[chapter].items():
        try:
            ok = holds(v, base)
        except (KeyError, TypeError) as err:  # not recorded, or recorded empty
            ok, claim = False, f"{claim} ({type(err).__name__}: {err})"
        if not ok:
            failed.append(claim)
    return failed


@pytest.mark.parametrize("chapter", list(CHAPTER_CLASSES))
def test_chapter_took_its_main_path(built_book, chapter):
    failed = main_path_failures(built_book, chapter)
    assert not failed, f"{chapter}: {failed}"
    nb = nbformat.read(built_book / "executed" / f"{chapter}.ipynb", as_version=4)
    shown = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for marker in ("exploratory receivers", "**Not run:**", "none found by the rule"):
        assert marker not in shown, f"{chapter} shows {marker!r}"


def test_appendix_reports_every_class_recovered(built_book):
    values = _values(built_book, "appendix_stand_in_model")
    assert values["planted.classes_recovered_exactly"]["value"] == 7
