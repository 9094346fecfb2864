"""The scorecard's verdicts, tolerances and chart, checked against hand-computed cases."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest

from conftest import REPO
from ioi_helpers import paper, pipeline, plots, results

TWO_SIDED = {"value": 3.56, "tolerance": 0.2}
LOWER = {"value": 0.81, "tolerance": 0.05, "bound": "lower"}
UPPER = {"value": 0.20, "tolerance": 0.02, "bound": "upper"}
SIGN = {"value": None, "expect": "< 0", "tolerance": 0.0}


@pytest.mark.parametrize("spec, ours, expected", [
    (TWO_SIDED, 3.56, "reproduced"),
    (TWO_SIDED, 3.75, "reproduced"),       # |3.75 - 3.56| = 0.19 <= 0.2
    (TWO_SIDED, 3.37, "reproduced"),       # 0.19 below
    (TWO_SIDED, 3.77, "not reproduced"),   # 0.21 above
    (TWO_SIDED, 3.30, "not reproduced"),
    (TWO_SIDED, -3.56, "not reproduced"),
    (LOWER, 0.95, "reproduced"),           # a lower bound: any larger value reproduces it
    (LOWER, 0.77, "reproduced"),           # 0.81 - 0.05 = 0.76 <= 0.77
    (LOWER, 0.75, "not reproduced"),
    (UPPER, 0.0, "reproduced"),
    (UPPER, 0.215, "reproduced"),          # <= 0.22
    (UPPER, 0.23, "not reproduced"),
    (SIGN, -0.4, "reproduced"),
    (SIGN, 0.0, "not reproduced"),         # no sign reversal
    (SIGN, 0.3, "not reproduced"),
    (TWO_SIDED, None, "not measured"),
    (TWO_SIDED, float("nan"), "not measured"),
    (TWO_SIDED, True, "not measured"),     # a bool is not a number here
])
def test_verdicts_by_hand(spec, ours, expected):
    assert paper.verdict(spec, ours, "gpt2") == expected


def test_calibrated_and_not_run():
    assert paper.verdict(TWO_SIDED, 3.56, "ioi-planted", ran=False) == "not run"
    marked = TWO_SIDED | {"calibrated": ["ioi-planted"]}
    assert paper.verdict(marked, 3.56, "ioi-planted") == "calibrated, not reproduced"  # exact, still not
    assert paper.verdict(marked, 3.56, "gpt2") == "reproduced"
    assert paper.verdict(marked, 3.56, "ioi-tiny") == "reproduced"
    assert paper.verdict(TWO_SIDED | {"calibrated": True}, 3.56, "ioi-tiny") == "calibrated, not reproduced"
    assert paper.verdict(TWO_SIDED | {"calibrated": True}, 3.56, "gpt2") == "reproduced"
    assert paper.verdict(TWO_SIDED, 3.0, "ioi-planted", {"calibrated": True}) == "calibrated, not reproduced"


def test_bands_by_hand():
    low, high = paper.tolerance_band(TWO_SIDED)
    assert low == pytest.approx(3.36) and high == pytest.approx(3.76)
    assert paper.tolerance_band(LOWER) == (pytest.approx(0.76), None)
    assert paper.tolerance_band(UPPER) == (None, pytest.approx(0.22))
    assert paper.tolerance_band(SIGN) == (None, 0.0)


def test_every_paper_number_states_a_tolerance_and_why():
    for key, spec in paper.NUMBERS.items():
        assert isinstance(spec.get("tolerance"), (int, float)) and spec["tolerance"] >= 0, key
        assert len(spec.get("tolerance_reason", "")) > 10, key
        paper.tolerance_band(spec)  # every entry has a band


def test_chart_has_a_dot_per_measured_number_and_a_band_per_number():
    rows = pd.DataFrame([
        {"claim": "a", "paper": 3.56, "ours": 3.4, "low": 3.36, "high": 3.76, "verdict": "reproduced"},
        {"claim": "b", "paper": 0.81, "ours": None, "low": 0.76, "high": None, "verdict": "not measured"},
        {"claim": "c", "paper": None, "ours": -0.5, "low": None, "high": 0.0, "verdict": "reproduced"},
    ])
    spec = plots.scorecard_chart(rows).to_dict()
    data = next(iter(spec["datasets"].values()))
    assert [(d["band from"], d["band to"]) for d in data][0] == (3.36, 3.76)
    lo, hi = -0.5, 3.76  # the extremes of all values: open ends run to the padded edge
    pad = 0.05 * (hi - lo)
    assert data[1]["band to"] == pytest.approx(hi + pad) and data[2]["band from"] == pytest.approx(lo - pad)
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["bar", "tick", "point"]
    plots.check_offline(spec)


def test_units_split_logit_differences_from_fractions():
    by_hand = {"baseline.logit_diff": paper.LOGIT_DIFF, "baseline.io_prob": paper.FRACTION,
               "token_position.orig_inverted": paper.LOGIT_DIFF, "minimality.0.1": paper.LOGIT_DIFF,
               "minimality.smallest_fraction": paper.FRACTION, "circuit.faithfulness": paper.FRACTION,
               "circuit.gap": paper.LOGIT_DIFF, "adversarial.io.logit_diff": paper.LOGIT_DIFF,
               "adversarial.io.s_above_io": paper.FRACTION, "backup.name_mover_knockout_drop": paper.FRACTION}
    assert {k: paper.unit(k) for k in by_hand} == by_hand
    # every number the paper states above 1.5 in absolute value is a logit difference
    for key, spec in paper.NUMBERS.items():
        if spec["value"] is not None and abs(spec["value"]) > 1.5:
            assert paper.unit(key) == paper.LOGIT_DIFF, key


def test_chart_gives_each_unit_its_own_axis():
    rows = pd.DataFrame([
        {"claim": "ld", "paper": 3.56, "ours": 3.4, "low": 3.36, "high": 3.76, "verdict": "reproduced",
         "unit": paper.LOGIT_DIFF},
        {"claim": "p", "paper": 0.49, "ours": 0.45, "low": 0.44, "high": 0.54, "verdict": "reproduced",
         "unit": paper.FRACTION},
    ])
    spec = plots.scorecard_chart(rows).to_dict()
    panels = spec["vconcat"]
    assert len(panels) == 2 and spec["resolve"]["scale"]["x"] == "independent"
    domains = [p["layer"][0]["encoding"]["x"]["scale"]["domain"] for p in panels]
    assert domains[0][0] > 3 and domains[1][1] < 1  # the fraction is not squeezed by the 3.56
    assert [p["layer"][0]["encoding"]["x"]["title"] for p in panels] == [paper.LOGIT_DIFF, paper.FRACTION]
    plots.check_offline(spec)


def test_scorecard_page_shows_verdicts_chart_and_collapsed_settings(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path / "results"))
    chapters = {spec["chapter"] for spec in paper.NUMBERS.values()} - {"08_adversarial_examples"}
    for chapter in chapters:  # chapter 8 did not run in this build
        results.start(chapter, "ioi-tiny", {"N": 10})
    for key, spec in paper.NUMBERS.items():
        if spec["chapter"] in chapters:
            ours = None if spec["value"] is None else spec["value"] + (0 if key == "circuit.F_M" else 10)
            results.record(spec["chapter"], key, ours, {"N": 10})
    out = pipeline.run_chapter(REPO / "book" / "scorecard.py",
                               {"model_name": "ioi-tiny", "results_dir": str(tmp_path / "results")}, tmp_path)
    nb = nbformat.read(out, as_version=4)
    html = "".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    text = html + "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells
                          if c.cell_type == "code" for o in c.outputs)
    n_ch8 = sum(s["chapter"] == "08_adversarial_examples" for s in paper.NUMBERS.values())
    assert f"**{n_ch8}** not run" in text
    # F(M) was recorded equal to the paper's value; every other number 10 above it, which only
    # reproduces a lower bound
    lower = sum(s.get("bound") == "lower" and s["chapter"] in chapters for s in paper.NUMBERS.values())
    assert lower == 3 and f"**{1 + lower}** reproduced" in text
    assert f"**{len(paper.NUMBERS) - n_ch8 - 1 - lower}** not reproduced" in text
    assert "<details><summary>Settings" in html and "tolerance: why" in html
    assert any("application/vnd.vegalite.v6+json" in o.get("data", {}) for c in nb.cells
               if c.cell_type == "code" for o in c.outputs)
    setup = next(c for c in nb.cells if "results.load_all" in c.source)
    assert "hide-input" in setup.metadata["tags"]
