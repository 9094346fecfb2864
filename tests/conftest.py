"""Shared fixtures. ``built_book`` runs the real pipeline once per session (tests marked book)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK_TEST_MODEL = "ioi-tiny"  # the offline model every chapter is executed on in the tests
SCALE_TEST_MODEL = "gpt2-random"  # GPT-2-small shapes: chapter 2 also runs on it, as a scale check
SCALE_TEST_CHAPTER = "02_name_movers"


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """``python -m ioi_helpers.pipeline --model BOOK_TEST_MODEL`` on every chapter in _toc.yml
    plus the book build; returns the output folder (``executed/``, ``html/``)."""
    out = tmp_path_factory.mktemp("book")
    cmd = [sys.executable, "-m", "ioi_helpers.pipeline", "--model", BOOK_TEST_MODEL, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print(proc.stdout)  # per-chapter wall times, shown with -s or on failure
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return out
