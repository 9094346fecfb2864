"""What the reader's text may not contain: a change-log. What changed goes into the git history
(and, where a reader needs it, a "Choices" line on the methods page), not into a chapter's
prose ("Earlier versions of this page quoted ...", "this book's earlier construction")."""

from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO
from ioi_helpers import pipeline

CHANGE_LOG = re.compile(
    r"earlier versions? of this|an earlier version|this book's (?:earlier|previous|old)|"
    r"(?:the|a) construction this book used|this book used before|previous versions? of this|"
    r"no longer (?:uses|quotes|compares)|(?:used|quoted) to (?:quote|use)", re.I)

TESTING_PAGE = REPO / "book" / "testing.md"
PAGES = [*pipeline.chapter_paths(REPO), REPO / "book" / "intro.md", TESTING_PAGE]
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def prose(path) -> str:
    """The Markdown a reader sees: the Markdown cells of a chapter, or a .md page."""
    if path.suffix == ".md":
        return path.read_text()
    nb = pipeline.load_chapter(path)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_no_change_log_in_the_readers_text(path):
    found = [m.group(0) for m in CHANGE_LOG.finditer(prose(path))]
    assert not found, f"{path.name}: {found}"


def test_the_check_catches_a_change_log():
    assert CHANGE_LOG.search("(Earlier versions of this page quoted \"at least 88%\")")
    assert CHANGE_LOG.search("the variant, this book's earlier construction, kept the IO")
    assert not CHANGE_LOG.search("the earlier layers write the name")


def _test_functions(path) -> set[str]:
    """The module-level test functions of a test file, read with ``ast`` (nothing imported)."""
    if not path.exists():
        return set()
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_the_testing_page_names_only_tests_that_exist():
    """Every ``tests/FILE.py::test_name`` on "How this book is tested" is a test function of
    that file: a renamed or deleted test makes the page fail here instead of going stale."""
    refs = TEST_REF.findall(TESTING_PAGE.read_text())
    assert len(refs) >= 10, refs
    missing = [f"{f}::{name}" for f, name in refs if name not in _test_functions(REPO / f)]
    assert not missing, missing


def test_the_testing_page_check_catches_a_missing_test():
    assert "test_no_change_log_in_the_readers_text" in _test_functions(REPO / "tests" / "test_page_text.py")
    assert not _test_functions(REPO / "tests" / "no_such_file.py")
    assert TEST_REF.findall("see `tests/test_x.py::test_y` and `tests/a.py`") == [("tests/test_x.py", "test_y")]
