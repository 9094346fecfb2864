"""Shared fixtures. ``built_book`` runs the real pipeline once per session (tests marked book)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK_TEST_MODEL = "ioi-planted"  # the offline model every chapter is executed on in the tests (known circuit)
# GPT-2 small's shape with the paper's heads at the paper's positions: the whole book runs on it
# too, so every "paper's head layout" branch (authors' K sets, naive circuit, head-by-head
# comparison with the paper) executes in the tests, as it will on GPT-2 small
PAPER_LAYOUT_TEST_MODEL = "gpt2-planted"
SCALE_TEST_MODEL = "gpt2-random"  # GPT-2-small shapes: chapter 2 also runs on it, as a scale check
SCALE_TEST_CHAPTER = "02_name_movers"
# The negative-control book: every chapter on gpt2-random (no circuit) at the smallest sizes that
# still run every step; its pages must say the model does not do the task and find no class.
CONTROL_TEST_MODEL = "gpt2-random"
CONTROL_SIZES = {"n_prompts": 20, "n_adversarial": 20}
# Chapter 7's completeness searches at the authors' sizes (100 random sets; greedy 10 runs x 10
# steps x 10 candidates, for the circuit and the naive circuit) are ~2,400 ablated runs of 100
# prompts. Batched (ablation.ablated_logit_diffs, ~1.6x faster than one forward per run) the whole
# chapter took 421 CPU-s (8 min wall, 1 thread) on ioi-planted at those sizes, against 128 CPU-s
# at these (163 CPU-s before batching): too long for the book tests, which run every code path at
# these smaller sizes; the chapter prints the sizes it used beside the authors'.
CI_SEARCH_SIZES = {"n_random_sets": 20, "greedy_n_sets": 2, "greedy_n_steps": 4, "greedy_candidates": 4,
                   # chapter 9's edge-level section on its first 10 prompts (default: all 100, or
                   # 20 in the control book at GPT-2 small's shape): every step still runs (halves
                   # of 5, a bootstrap over 10), and its oracle (EAP's edge AUC from the exported
                   # file) holds at any size
                   "edge_n_prompts": 10,
                   # and its negative control (gpt2-random in the other books) on 8 prompts, not 16
                   "control_n_prompts": 8}
# The gpt2-planted book at GPT-2 small's shape, smaller still so that it fits CI beside the rest:
# at the sizes above it took about an hour on 2 idle cores (a forward of 100 prompts costs ~2 s
# there, against ~0.1 s on ioi-planted). 50 prompts per experiment, not 100 (discovery still
# returns exactly the paper's 26 heads at 50; at 100, the chapters' default, test_gpt2_planted.py
# checks it); chapter 7's searches halved again; chapter 9's ACDC-style walk on 6 prompts, not 20
# (it path-patches every edge it tests: 18 of the hour). Every code path still runs.
PAPER_LAYOUT_SIZES = {"n_prompts": 50, "n_random_sets": 10, "greedy_n_sets": 1, "greedy_n_steps": 3,
                      "greedy_candidates": 3, "acdc_n_prompts": 6}


CACHE_ENV_VAR = "IOI_CACHE_DIR"  # ioi_helpers.cache.CACHE_ENV_VAR (not imported: conftest stays light)
RESULTS_ENV_VAR = "IOI_RESULTS_DIR"


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache_and_results(tmp_path_factory):
    """No test reads or writes the user's discovery cache or results folder: the whole session
    (and every subprocess it starts) uses empty folders of its own. Tests that must recompute
    set a fresher one still."""
    saved = {k: os.environ.get(k) for k in (CACHE_ENV_VAR, RESULTS_ENV_VAR)}
    os.environ[CACHE_ENV_VAR] = str(tmp_path_factory.mktemp("session-cache"))
    os.environ[RESULTS_ENV_VAR] = str(tmp_path_factory.mktemp("session-results"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def imported_top_level(folder: Path) -> set[str]:
    """The top-level modules that the ``.py`` files under ``folder`` import (absolute imports)."""
    import ast

    mods: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


def fresh_env(folder: Path) -> dict:
    """The environment for a pipeline subprocess with an empty discovery cache ``folder/cache``."""
    (folder / "cache").mkdir(parents=True, exist_ok=False)
    return {**os.environ, CACHE_ENV_VAR: str(folder / "cache")}


def _run_book(tmp_path_factory, model: str, folder: str, sizes: dict | None = None) -> Path:
    out = tmp_path_factory.mktemp(folder)
    cmd = [sys.executable, "-m", "ioi_helpers.pipeline", "--model", model, "--out", str(out),
           *[a for k, v in (CI_SEARCH_SIZES | (sizes or {})).items() for a in ("-p", k, str(v))]]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=fresh_env(out))
    print(proc.stdout)  # per-chapter wall times, shown with -s or on failure
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return out


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """``python -m ioi_helpers.pipeline --model BOOK_TEST_MODEL`` on every chapter in _toc.yml
    plus the book build, from an empty discovery cache (``cache/``); returns the output folder
    (``executed/``, ``html/``, ``cache/``, ``results/``)."""
    return _run_book(tmp_path_factory, BOOK_TEST_MODEL, "book")


@pytest.fixture(scope="session")
def built_paper_layout_book(tmp_path_factory) -> Path:
    """The same on ``PAPER_LAYOUT_TEST_MODEL`` (gpt2-planted) at ``PAPER_LAYOUT_SIZES``: the
    offline rehearsal of the published GPT-2 book, every paper-layout branch executed."""
    return _run_book(tmp_path_factory, PAPER_LAYOUT_TEST_MODEL, "book-gpt2-planted", PAPER_LAYOUT_SIZES)


@pytest.fixture(scope="session", params=[BOOK_TEST_MODEL, PAPER_LAYOUT_TEST_MODEL])
def planted_book(request) -> Path:
    """Each of the two planted books in turn (``built_book``, ``built_paper_layout_book``): for
    the checks that must hold on both, the oracles and the pages as a reader sees them."""
    return request.getfixturevalue({BOOK_TEST_MODEL: "built_book",
                                    PAPER_LAYOUT_TEST_MODEL: "built_paper_layout_book"}[request.param])


@pytest.fixture(scope="session")
def built_control_book(tmp_path_factory) -> Path:
    """The same on ``CONTROL_TEST_MODEL`` (gpt2-random) at ``CONTROL_SIZES``: the negative
    control, every chapter's fallback path executed."""
    return _run_book(tmp_path_factory, CONTROL_TEST_MODEL, "book-control", CONTROL_SIZES)


@pytest.fixture(scope="session")
def unexecuted_book(tmp_path_factory) -> Path:
    """Every page of _toc.yml built from the committed notebooks as they are (nothing executed;
    book/NAME.ipynb, see ioi_helpers.notebooks): launch buttons and cell tags depend only on the
    pages and _config.yml. Returns the html folder."""
    from ioi_helpers import notebooks, pipeline

    out = tmp_path_factory.mktemp("unexecuted")
    return pipeline.build_book([notebooks.notebook_path(p) for p in pipeline.chapter_paths()], out,
                               unexecuted=True)
