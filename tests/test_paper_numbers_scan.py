"""One source for every paper number: no chapter's code types in a value of ``paper.NUMBERS``
(or ``paper.QUOTED``); it reads it from ``ioi_helpers.paper``.

Scanned: the code cells of every page in book/ (numeric literals, and the numbers inside string
literals and f-string text, "0.87" or "87%"). Not scanned: parameters cells (a reader's knobs,
documented there), markdown cells and docstrings (prose). A literal that only happens to equal a
paper number is allowed on a line that says so with ``# not a paper number: <why>``.
"""

from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO
from ioi_helpers import paper, pipeline

EXEMPT = "# not a paper number"
PAGES = sorted((REPO / "book").glob("*.py"))
NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?%?")


def paper_values() -> dict[float, list[str]]:
    out: dict[float, list[str]] = {}
    for table in (paper.NUMBERS, paper.QUOTED):
        for key, spec in table.items():
            if isinstance(spec.get("value"), (int, float)):
                out.setdefault(round(float(spec["value"]), 6), []).append(key)
    return out


VALUES = paper_values()


def numbers_in_text(text: str) -> list[tuple[str, list[str]]]:
    """Decimal numbers and percentages in ``text`` that equal a paper value."""
    hits = []
    for m in NUM.finditer(text):
        token = m.group(0)
        if "." not in token and not token.endswith("%"):
            continue  # integers (counts, indices, "N = 100") are not what the paper reports
        x = float(token.rstrip("%")) / (100 if token.endswith("%") else 1)
        if round(x, 6) in VALUES:
            hits.append((token, VALUES[round(x, 6)]))
    return hits


def literals(source: str) -> list[tuple[int, str, list[str]]]:
    """(line, literal, paper keys) for every paper number typed into ``source``."""
    tree = ast.parse(source)
    docstrings = {id(n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, float)):
            node = ast.Constant(-node.operand.value, lineno=node.lineno)  # -0.99 is one literal
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        if EXEMPT in lines[node.lineno - 1]:
            continue
        if isinstance(node.value, float) and round(node.value, 6) in VALUES:
            out.append((node.lineno, repr(node.value), VALUES[round(node.value, 6)]))
        elif isinstance(node.value, str):
            out += [(node.lineno, tok, keys) for tok, keys in numbers_in_text(node.value)]
    return out


def code_cells(path):
    nb = pipeline.load_chapter(path)
    return [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_no_paper_number_is_typed_into_chapter_code(path):
    found = [(line, lit, keys) for src in code_cells(path) for line, lit, keys in literals(src)]
    assert not found, (f"{path.stem}: paper numbers typed in instead of read from ioi_helpers.paper "
                       f"(cell line, literal, paper keys): {found}")


def test_the_scan_finds_what_it_should():
    """The scan itself: it flags numbers, percentages and f-string text, and spares prose,
    integers, parameters-style exemptions and numbers the paper does not have."""
    v = paper.NUMBERS["circuit.faithfulness"]["value"]  # 0.87
    assert literals(f"x = {v}") and literals(f'y = f"paper: {v:.0%}, ours {{z}}"')
    assert literals('t = "F(C) = 3.10"') and literals("r = -0.99 * 2")
    assert not literals(f'x = {v}  {EXEMPT}: a coincidence')
    assert not literals(f'def f():\n    """The paper: {v}."""\n    return 1')
    assert not literals("n = 100\nk = 0.333\ns = 'N = 500'")


def test_exemptions_are_rare_and_explained():
    lines = [line for p in PAGES for line in p.read_text().splitlines() if EXEMPT in line]
    assert len(lines) <= 3, lines
    assert all(re.search(re.escape(EXEMPT) + r": \S", line) for line in lines), lines
