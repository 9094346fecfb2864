"""Tables for reading: what a chapter shows as a table, formatted once, the same way everywhere.

:func:`table` turns a result frame into what a reader should see: a fixed number of decimals,
no row index (a name that matters is a column), "n/a" (with its reason, where the caller gives
one) in place of NaN or None, "none" in place of an empty set, and repeated rows collapsed into
one with a count. Importing this module (``plots`` imports it, and every chapter imports
``plots``) also sets :data:`TABLE_OPTIONS`: pandas shows every character of a cell, since a
template or a prompt is the point of its cell (the book's stylesheet wraps long cells to the
column).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from .paper import head_name

# pandas' HTML tables: whole cells, never cut to 50 characters and "..."
TABLE_OPTIONS = {"display.max_colwidth": None}
for _option, _value in TABLE_OPTIONS.items():
    pd.set_option(_option, _value)

COUNT = "rows"  # the column that says how many identical rows one row stands for


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value: Any, precision: int = 3, na: str = "n/a") -> str:
    """One cell as a reader reads it: floats to ``precision`` decimals, NaN/None as ``na``,
    a head ``(layer, index)`` as "layer.index", an empty set, list, tuple or dict as "none", a
    set or list as its items joined by spaces."""
    if _missing(value):
        return na
    if (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return head_name(value)  # a head, (layer, index)
    if isinstance(value, (set, frozenset, list, tuple, dict)):
        if not value:
            return "none"
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        return " ".join(cell(v, precision, na) for v in items)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def table(df: pd.DataFrame | pd.Series | None, precision: int | dict[str, int] = 3, na: str = "n/a",
          index: bool = False, collapse: bool = False, head: int | None = None) -> Styler | None:
    """``df`` formatted for the page (see the module's docstring).

    ``precision``: decimals for every float column, or per column (others: 3). ``na``: what a
    missing value reads as, e.g. ``"n/a: no Name Movers found"``. ``index=True`` keeps the index
    as leading column(s) (a meaningful label, such as ``set_index("head")``); the row numbers
    themselves are never shown. ``collapse=True``: identical rows become one, with their count
    in a :data:`COUNT` column (only when some row repeats); the first occurrence keeps its place.
    ``head``: the first rows only, counted after collapsing (the top 10 distinct rows).
    ``df=None`` (a comparison that does not apply to this model, such as
    :func:`ioi_helpers.truth.against_planted` on a model with no planted circuit) gives None:
    the cell shows nothing.
    """
    if df is None:
        return None
    if isinstance(df, pd.Series):
        df = df.to_frame()
    out = df.reset_index() if index else df.reset_index(drop=True)
    digits = ({c: precision.get(c, 3) for c in out.columns} if isinstance(precision, dict)
              else {c: precision for c in out.columns})
    shown = pd.DataFrame({c: [cell(v, digits[c], na) for v in out[c]] for c in out.columns},
                         columns=out.columns)
    if collapse and shown.duplicated().any():
        key = list(shown.columns)
        counts = shown.groupby(key, sort=False).size().rename(COUNT).reset_index()
        shown = counts[key + [COUNT]]
        shown[COUNT] = shown[COUNT].astype(str)
    if head is not None:
        shown = shown.head(head)
    return shown.style.hide(axis="index")
