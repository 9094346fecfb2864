"""Numbers a model sets by construction are marked "calibrated, not reproduced": the model says
which (``model.calibrated``), the chapters record it, the scorecard's verdict shows it."""

from __future__ import annotations

import ast

import pytest

import tiny_models as tm
from conftest import REPO
from ioi_helpers import models, paper, pipeline, results, train_tiny


def test_ioi_tiny_marks_the_numbers_its_calibration_sets():
    model = tm.ioi_tiny()
    assert model.calibrated == {"baseline.logit_diff", "circuit.F_M"}
    assert model.calibrated <= set(paper.NUMBERS)
    # the calibration target is the paper's logit diff, which both numbers are
    for key in model.calibrated:
        assert paper.NUMBERS[key]["value"] == train_tiny.TARGET_LOGIT_DIFF


def test_a_model_built_from_weights_claims_nothing():
    assert tm.random_model().calibrated == frozenset()


def test_recorded_entries_carry_the_mark_and_the_verdict_says_calibrated(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path))
    results.start("01_task", "ioi-tiny", {}, calibrated={"baseline.logit_diff"})
    results.record("01_task", "baseline.logit_diff", 3.56)
    results.record("01_task", "baseline.io_prob", 0.49)
    values = results.load("01_task")["values"]
    assert values["baseline.logit_diff"].get("calibrated") is True
    assert "calibrated" not in values["baseline.io_prob"]
    verdict = paper.verdict(paper.NUMBERS["baseline.logit_diff"], 3.56, "ioi-tiny", values["baseline.logit_diff"])
    assert verdict == paper.CALIBRATED  # however close to the paper
    assert paper.verdict(paper.NUMBERS["baseline.io_prob"], 0.49, "ioi-tiny",
                         values["baseline.io_prob"]) == paper.REPRODUCED


@pytest.mark.parametrize("path", [p for p in pipeline.chapter_paths(REPO) if "results.start(" in p.read_text()],
                         ids=lambda p: p.stem)
def test_every_chapter_records_what_its_model_calibrated(path):
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "results.start"]
    assert calls and all(any(k.arg == "calibrated" and ast.unparse(k.value).endswith("model.calibrated")
                             for k in c.keywords) for c in calls), path.stem
