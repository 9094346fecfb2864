"""The chapters' visible code is short (issue 23, item 6): in each chapter and on Explore, the
code cells a reader sees (no hide/remove tag, not the parameters cell) have a median of at most
8 lines, none over 20, no line over 88 characters, and no ``display(Markdown(f"..."))``: prose
lives in Markdown cells with numbers glued in, and set-up and formatting code is folded."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("0*.ipynb")) + [BOOK / "explore.ipynb"]  # the pages of experiments
FOLDED = {"hide-input", "remove-input", "remove-cell", "hide-cell", "parameters"}
MEDIAN, LONGEST, WIDTH = 8, 20, 88


def visible_cells(notebook: dict) -> list[list[str]]:
    """The source lines of every code cell a reader sees unfolded."""
    return [("".join(c["source"]) if isinstance(c["source"], list) else c["source"]).splitlines()
            for c in notebook["cells"]
            if c["cell_type"] == "code" and not FOLDED & set(c.get("metadata", {}).get("tags", []))]


def over_limits(notebook: dict) -> list[str]:
    """What breaks the limits, one line each (empty: within them)."""
    cells = visible_cells(notebook)
    out = []
    if cells and statistics.median(map(len, cells)) > MEDIAN:
        out.append(f"median {statistics.median(map(len, cells))} lines > {MEDIAN}")
    out += [f"cell of {len(c)} lines > {LONGEST}: {c[0][:40]!r}" for c in cells if len(c) > LONGEST]
    out += [f"line of {len(l)} > {WIDTH}: {l[:40]!r}" for c in cells for l in c if len(l) > WIDTH]
    out += [f"display(Markdown(f...)) in a visible cell: {l.strip()[:40]!r}"
            for c in cells for l in c if re.search(r"display\(Markdown\(f", l)]
    return out


def _notebook(*cells: tuple[str, list[str]]) -> dict:
    return {"cells": [{"cell_type": "code", "source": src, "metadata": {"tags": tags}}
                      for src, tags in cells]}


def test_the_limits_catch_long_wide_and_printed_prose():
    short = "x = 1\nshow(x)"
    assert over_limits(_notebook((short, []), ("\n".join(["y = 2"] * 40), ["hide-input"]))) == []
    long = "\n".join(["y = 2"] * 21)
    found = over_limits(_notebook((long, []), ("a" * 89, []), ('display(Markdown(f"{x}"))', [])))
    assert [f.split(" ")[0] for f in found] == ["cell", "line", "display(Markdown(f...))"]
    assert over_limits(_notebook(*[("\n".join(["z"] * 9), [])] * 3)) == ["median 9 lines > 8"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_visible_code_is_short(chapter):
    assert len(CHAPTERS) == 10
    assert over_limits(json.loads(chapter.read_text())) == []
