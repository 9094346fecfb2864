"""The stand-in appendix's last cell on a planted model other than ioi-planted: a book run on
gpt2-planted compares the recorded classes with the heads planted in the model the chapters ran
on (same name, same seed) and records ``planted.classes_recovered_exactly``. The cell is run as
in test_appendix_classes.py, with stand-in model objects (no model is built)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import REPO
from ioi_helpers import models, paper, pipeline, results, truth

CHAPTER = "appendix_stand_in_model"


def _cell() -> str:
    nb = pipeline.load_chapter(REPO / "book" / f"{CHAPTER}.py")
    return next(c.source for c in nb.cells if c.cell_type == "code" and 'key.removeprefix("classes.")' in c.source)


def _fake(name: str, planted: dict) -> SimpleNamespace:
    return SimpleNamespace(ioi_model_name=name, planted={c: [tuple(h) for h in hs] for c, hs in planted.items()})


@pytest.mark.parametrize("book_model", ["gpt2-planted", "gpt2-planted(seed=0)"])
def test_a_book_run_on_gpt2_planted_records_the_classes_recovered(tmp_path, monkeypatch, book_model):
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path))
    results.start("02_name_movers", "gpt2-planted(seed=0)")
    results.record("02_name_movers", "classes.Name Mover", [list(h) for h in paper.CIRCUIT["Name Mover"]])
    results.record("02_name_movers", "classes.Negative Name Mover", [[10, 7]])  # one of two planted
    results.start(CHAPTER, book_model)
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append((a, k)))
    shown = []
    ns = {"results": results, "paper": paper, "pd": pd, "models": models, "truth": truth,
          "BOOK_MODEL": book_model, "CHAPTER": CHAPTER, "display": shown.append, "Markdown": lambda x: x,
          "planted_model": _fake("ioi-planted(seed=0)", {"Name Mover": [(1, 1)]}),
          "gpt2_model": _fake("gpt2-planted(seed=0)", paper.CIRCUIT)}
    exec(compile(_cell(), "appendix", "exec"), ns)
    assert not loaded  # the model on the page with the chapters' seed is reused
    exact = results.load(CHAPTER)["values"]["planted.classes_recovered_exactly"]["value"]
    assert exact == 1  # the Name Movers; the Negative Name Movers miss 11.10
    table = ns["table"].set_index("class")
    assert not table.loc["Negative Name Mover", "exact"]
    assert any("gpt2-planted" in str(s) and "not GPT-2 small" in str(s) for s in shown)


def test_another_seed_loads_that_seed(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path))
    results.start("02_name_movers", "gpt2-planted(seed=3)")
    results.record("02_name_movers", "classes.Name Mover", [[9, 9]])
    results.start(CHAPTER, "gpt2-planted")
    loaded = []

    def load(name, seed=0, **_):
        loaded.append((name, seed))
        return _fake(f"{name}(seed={seed})", {"Name Mover": [(9, 9)]})

    monkeypatch.setattr(models, "load_model", load)
    ns = {"results": results, "paper": paper, "pd": pd, "models": models, "truth": truth,
          "BOOK_MODEL": "gpt2-planted", "CHAPTER": CHAPTER, "display": lambda x: None,
          "Markdown": lambda x: x, "planted_model": _fake("ioi-planted(seed=0)", {}),
          "gpt2_model": _fake("gpt2-planted(seed=0)", paper.CIRCUIT)}
    exec(compile(_cell(), "appendix", "exec"), ns)
    assert loaded == [("gpt2-planted", 3)]
    assert results.load(CHAPTER)["values"]["planted.classes_recovered_exactly"]["value"] == 1
