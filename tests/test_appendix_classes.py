"""The appendix's class table: recorded classes matched to the paper's by exact name (a Negative
or Backup Name Mover is never shown as a Name Mover)."""

from __future__ import annotations

import pandas as pd

from conftest import REPO
from ioi_helpers import models, paper, pipeline, results


def test_appendix_matches_recorded_classes_by_exact_name(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path))
    results.start("02_name_movers", "m")
    results.record("02_name_movers", "classes.Name Mover", [[1, 2]])
    results.record("02_name_movers", "classes.Negative Name Mover", [[1, 3]])
    results.record("02_name_movers", "robustness.Name Mover.seed_1", [[0, 0]])  # not a class
    results.start("06_backup_name_movers", "m")
    results.record("06_backup_name_movers", "classes.Backup Name Mover", [[2, 0], [2, 1]])
    nb = pipeline.load_chapter(REPO / "book" / "appendix_stand_in_model.py")
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and 'key.removeprefix("classes.")' in c.source)
    shown = []
    ns = {"results": results, "paper": paper, "pd": pd, "models": models, "BOOK_MODEL": "m",
          "CHAPTER": "appendix_stand_in_model", "display": lambda x: shown.append(x), "Markdown": lambda x: x}
    exec(compile(cell, "appendix", "exec"), ns)
    recorded = ns["recorded"]
    assert set(recorded) == {"Name Mover", "Negative Name Mover", "Backup Name Mover"}
    assert recorded["Name Mover"] == [(1, 2)]  # not the robustness entry, not the other classes
    assert recorded["Negative Name Mover"] == [(1, 3)]
    assert recorded["Backup Name Mover"] == [(2, 0), (2, 1)]
    table = ns["table"].set_index("class")
    assert table.loc["Backup Name Mover", "paper (GPT-2 small)"] == ", ".join(
        map(paper.head_name, paper.CIRCUIT["Backup Name Mover"]))
