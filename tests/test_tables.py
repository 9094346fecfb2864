"""tables.table: what a reader sees in a result table, checked cell by cell on frames written
out by hand."""

from __future__ import annotations

import math

import pandas as pd

from ioi_helpers import tables


def _cells(styler) -> list[list[str]]:
    """The displayed body of a Styler, as text, row by row (what the HTML page shows)."""
    return styler.data.values.tolist()


def test_cells_read_as_written_by_hand():
    df = pd.DataFrame({"head": ["9.9", "10.7"], "effect": [-0.12345, float("nan")],
                       "heads": [set(), {(9, 6), (9, 9)}], "kept": [True, False], "n": [3, None]})
    got = _cells(tables.table(df))
    assert got == [["9.9", "-0.123", "none", "yes", "3.000"],
                   ["10.7", "n/a", "9.6 9.9", "no", "n/a"]]


def test_precision_per_column_and_the_reason_for_a_missing_value():
    df = pd.DataFrame({"a": [1 / 3], "b": [2 / 3], "c": [math.nan]})
    got = _cells(tables.table(df, precision={"a": 1}, na="n/a: no Name Movers"))
    assert got == [["0.3", "0.667", "n/a: no Name Movers"]]


def test_no_row_numbers_but_a_named_index_kept_as_a_column():
    df = pd.DataFrame({"effect": [0.5, 0.25]}, index=pd.Index([1868, 1694], name="edge"))
    html = tables.table(df).to_html()
    assert "1868" not in html and "0.500" in html
    kept = tables.table(df, index=True)
    assert list(kept.data.columns) == ["edge", "effect"]
    assert _cells(kept) == [["1868", "0.500"], ["1694", "0.250"]]


def test_repeated_rows_collapse_with_their_count_in_first_seen_order():
    df = pd.DataFrame({"K": ["greedy"] * 7 + ["random", "greedy"],
                       "score": [0.1] * 7 + [0.2, 0.3]})
    got = _cells(tables.table(df, collapse=True))
    assert got == [["greedy", "0.100", "7"], ["random", "0.200", "1"], ["greedy", "0.300", "1"]]
    assert list(tables.table(df, collapse=True).data.columns) == ["K", "score", tables.COUNT]
    # nothing repeats: no count column
    assert list(tables.table(df.drop_duplicates(), collapse=True).data.columns) == ["K", "score"]
    # rounding decides what repeats: 0.1001 and 0.1004 read the same at three decimals
    near = pd.DataFrame({"score": [0.1001, 0.1004]})
    assert _cells(tables.table(near, collapse=True)) == [["0.100", "2"]]


def test_the_first_rows_are_counted_after_collapsing():
    df = pd.DataFrame({"K": ["greedy"] * 7 + ["random", "class"], "score": [0.3] * 7 + [0.2, 0.1]})
    got = _cells(tables.table(df, collapse=True, head=2))
    assert got == [["greedy", "0.300", "7"], ["random", "0.200", "1"]]


def test_a_series_reads_as_a_one_column_table():
    s = pd.Series({"EAP": 1.234, "random": 0.5}, name="seconds").rename_axis("method")
    assert _cells(tables.table(s, precision=1, index=True)) == [["EAP", "1.2"], ["random", "0.5"]]
    assert _cells(tables.table(s, precision=1)) == [["1.2"], ["0.5"]]


def test_a_comparison_that_does_not_apply_shows_nothing():
    assert tables.table(None) is None
