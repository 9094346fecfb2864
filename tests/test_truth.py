"""``truth``: precision/recall of discovered classes against a known circuit, by hand."""

from __future__ import annotations

import math

from ioi_helpers import truth


def test_precision_recall_by_hand():
    # 2 of 3 found heads are right, 2 of 4 true heads were found
    p, r = truth.precision_recall([(1, 0), (1, 1), (2, 3)], [(1, 0), (1, 1), (0, 0), (3, 3)])
    assert (p, r) == (2 / 3, 2 / 4)


def test_empty_cases():
    assert truth.precision_recall([], []) == (1.0, 1.0)
    p, r = truth.precision_recall([], [(0, 1)])
    assert math.isnan(p) and r == 0.0
    assert truth.precision_recall([(0, 1)], []) == (0.0, 0.0)


def test_compare_rows_and_exactness():
    found = {"Name Mover": [(3, 1), (3, 2)], "S-Inhibition": []}
    planted = {"Name Mover": [(3, 2), (3, 1)], "S-Inhibition": [(2, 0)]}
    df = truth.compare(found, planted)
    nm, si = df.iloc[0], df.iloc[1]
    assert nm["exact"] and nm["discovered"] == "3.1, 3.2" and nm["missing"] == "" and nm["recall"] == 1.0
    assert not si["exact"] and si["missing"] == "2.0" and si["discovered"] == "none" and si["recall"] == 0.0


def test_compare_reads_head_class_objects():
    class Cls:  # anything with .heads, as discovery.HeadClass
        heads = [(0, 1)]

    df = truth.compare({"Previous Token": Cls()}, {"Previous Token": [(0, 1), (0, 2)]})
    assert df.loc[0, "precision"] == 1.0 and df.loc[0, "recall"] == 0.5 and df.loc[0, "extra"] == ""


def test_stand_in_note_says_what_a_planted_match_shows():
    from ioi_helpers import paper

    planted = paper.stand_in_note("ioi-planted(seed=0)")
    assert "planted" in planted and "known circuit" in planted and "nothing about GPT-2 small" in planted
    assert "planted" not in paper.stand_in_note("ioi-tiny")
