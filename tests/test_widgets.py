"""The ipywidgets explorers: each builds, reacts to its controls, and computes the same numbers
as the package function it wraps (checked against that function called directly, or against
an independent computation)."""

from __future__ import annotations

import math

import nbformat
import pandas as pd
import pytest
import torch

from ioi_helpers import ablation, discovery, metrics, paper, patching, pipeline, plots, widgets
from ioi_helpers.models import get_tokenizer
from tiny_models import random_model

N_PROMPTS = 12


@pytest.fixture(scope="module", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """discovery's disk cache in a fresh folder: no stale or shared results."""
    mp = pytest.MonkeyPatch()
    mp.setenv(discovery.CACHE_ENV_VAR, str(tmp_path_factory.mktemp("ioi-cache")))
    torch.set_grad_enabled(False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def model():
    return random_model()  # 3 layers x 4 heads, large init: effects far above tolerances


@pytest.fixture(scope="module")
def setup(model):
    return discovery.Setup(model, n_prompts=N_PROMPTS)


@pytest.fixture(scope="module")
def values(model, setup):
    return ablation.ablation_values(model, setup.ioi, setup.abc)


def _class(name: str, heads, kept_at: str) -> discovery.HeadClass:
    return discovery.HeadClass(name, [tuple(h) for h in heads], "given by the test", pd.DataFrame(),
                               torch.zeros(3, 4), "none", math.nan, math.nan, kept_at)


@pytest.fixture(scope="module")
def classes():
    """Classes as the discovery functions return them (fixed heads: the test is about the
    widgets, not about discovery on a random model)."""
    return {"Name Mover": _class("Name Mover", [(2, 1), (2, 3)], "END"),
            "S-Inhibition": _class("S-Inhibition", [(1, 0)], "END"),
            "Induction": _class("Induction", [(0, 2), (1, 0)], "S2"),
            "Previous Token": _class("Previous Token", [], "S1+1")}


def outputs(explorer) -> tuple:
    return tuple(explorer.output.outputs)


# ----------------------------------------------------------------------------- display


def test_an_explorer_displays_as_the_live_widget_with_its_chart_as_fallback(model, classes, setup):
    ex = widgets.PromptExplorer(model, classes, setup.ioi)
    data, _ = ex._repr_mimebundle_()
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
    assert data[plots.VEGALITE_MIME] == ex.chart.to_dict()
    assert data["text/plain"] == widgets.LIVE_ONLY
    # the book's staging turns it into an offline chart, like any other chart output
    nb = nbformat.from_dict({"cells": [{"outputs": [{"output_type": "execute_result",
                                                     "data": dict(data)}]}]})
    pipeline.offline_charts(nb)
    html = nb.cells[0].outputs[0].data["text/html"]
    assert html.startswith('<div class="ioi-chart">')
    # in the live widget the chart is Altair's HTML (no second copy of the spec in the state)
    (out,) = outputs(ex)
    assert "text/html" in out["data"] and not any("vegalite" in k for k in out["data"])


# ----------------------------------------------------------------------------- prompts


def test_prompt_explorer_matches_the_metrics_on_dataset_prompts(model, classes, setup):
    ex = widgets.PromptExplorer(model, classes, setup.ioi)
    expected = metrics.logit_diff(metrics.end_logits(model, setup.ioi), setup.ioi)
    assert ex.analysis().logit_diff == pytest.approx(expected[0].item(), abs=1e-4)
    before = outputs(ex)
    ex.pick.value = 3
    assert (ex.text.value, ex.io.value, ex.s.value) == (setup.ioi.prompts[3].text,
                                                        setup.ioi.prompts[3].io, setup.ioi.prompts[3].s)
    assert ex.analysis().logit_diff == pytest.approx(expected[3].item(), abs=1e-4)
    assert outputs(ex) != before and ex.error is None


def test_prompt_explorer_patterns_and_head_picker(model, classes, setup):
    ex = widgets.PromptExplorer(model, classes, setup.ioi)
    assert (ex.layer.value, ex.head.value) == (2, 1)  # the first head of the first class
    assert "Name Mover" in ex.chart.to_json()
    tokens = get_tokenizer()(setup.ioi.prompts[0].text, add_special_tokens=False,
                             return_tensors="pt")["input_ids"]
    _, cache = model.run_with_cache(tokens)
    a = ex.analysis()
    for layer in range(3):
        torch.testing.assert_close(a.patterns[layer], cache["pattern", layer][0].float().cpu(),
                                   atol=1e-5, rtol=1e-4)
    before = outputs(ex)
    ex.layer.value, ex.head.value = 0, 3
    assert outputs(ex) != before
    assert "head 0.3 (no class)" in ex.chart.to_json()


def test_prompt_explorer_on_a_typed_prompt(model, classes, setup):
    ex = widgets.PromptExplorer(model, classes, setup.ioi)
    ex.pick.value = -1
    text = "Then, Alice and Bob were working at the office. Bob gave a book to"
    ex.text.value = text
    ex.io.value, ex.s.value = "Alice", "Bob"
    assert ex.error is None
    tokens = get_tokenizer()(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    logits = model(tokens)[0, -1]
    enc = lambda n: get_tokenizer().encode(" " + n, add_special_tokens=False)[0]  # noqa: E731
    assert ex.analysis().logit_diff == pytest.approx((logits[enc("Alice")] - logits[enc("Bob")]).item(),
                                                     abs=1e-4)
    top = ex.analysis().top(get_tokenizer(), 3)
    assert top["token"].iloc[0] == repr(get_tokenizer().decode([int(logits.argmax())]))


def test_prompt_explorer_reports_bad_names_instead_of_raising(model, classes, setup):
    ex = widgets.PromptExplorer(model, classes, setup.ioi)
    ex.io.value = "Nobodyatallhere"
    assert "not a single GPT-2 token" in ex.error and outputs(ex) == ()
    assert "Cannot compute" in ex.status.value
    ex.io.value = setup.ioi.prompts[0].io
    assert ex.error is None and len(outputs(ex)) == 1
    ex.io.value = "Paris" if "Paris" not in setup.ioi.prompts[0].text else "London"
    assert "must occur in the prompt" in ex.error


# ----------------------------------------------------------------------------- path patching


def test_patching_explorer_matches_path_patch(model, classes, setup):
    ex = widgets.PatchingExplorer(setup, classes, sizes=(8, N_PROMPTS))
    direct = patching.path_patch(model, setup.ioi, setup.abc, caches=setup.caches)
    torch.testing.assert_close(ex.result().relative, direct.relative)
    before = outputs(ex)
    ex.receiver.value = "q|Name Mover"
    assert ex.position.value == "END" and not ex.position.disabled
    expected = patching.path_patch(model, setup.ioi, setup.abc, receivers=[(2, 1), (2, 3)],
                                   receiver_input="q", position="END", caches=setup.caches)
    torch.testing.assert_close(ex.result().relative, expected.relative)
    assert outputs(ex) != before
    ex.receiver.value = "k|S-Inhibition"  # keys where S-Inhibition heads attend: S2
    assert ex.position.value == "S2"
    ex.position.value = "IO"
    expected = patching.path_patch(model, setup.ioi, setup.abc, receivers=[(1, 0)],
                                   receiver_input="k", position="IO", caches=setup.caches)
    torch.testing.assert_close(ex.result().relative, expected.relative)


def test_patching_explorer_sender_class_and_dataset_size(model, classes, setup):
    ex = widgets.PatchingExplorer(setup, classes, sizes=(8, N_PROMPTS))
    ex.sender.value = "Induction"
    expected = patching.path_patch(model, setup.ioi, setup.abc, senders=[((0, 2), (1, 0))],
                                   caches=setup.caches)
    assert ex.sender_effect() == pytest.approx(expected.relative[0].item(), abs=1e-5)
    assert "patched together" in ex.chart.to_json()
    before = outputs(ex)
    ex.size.value = 8
    small = discovery.Setup(model, n_prompts=8)
    torch.testing.assert_close(ex.result().relative,
                               patching.path_patch(model, small.ioi, small.abc).relative)
    assert "N = 8" in ex.chart.to_json() and outputs(ex) != before


def test_patching_explorer_without_classes_offers_the_logits_only(model, setup):
    ex = widgets.PatchingExplorer(setup, {"Name Mover": _class("Name Mover", [], "END")})
    assert [v for _, v in ex.receiver.options] == ["logits"]
    assert list(ex.sender.options) == ["(none)"]
    assert ex.error is None and len(outputs(ex)) == 1


# ----------------------------------------------------------------------------- ablation


def test_ablation_explorer_matches_faithfulness(model, classes, setup):
    ex = widgets.AblationExplorer(setup, classes)  # computes its own ablation values
    values = ablation.ablation_values(model, setup.ioi, setup.abc)
    assert ex.boxes["Previous Token"].disabled and not ex.boxes["Previous Token"].value
    full = ablation.faithfulness(model, setup.ioi, values, discovery.circuit(classes))
    got = ex.faithfulness()
    assert (got.F_M, got.F_C) == pytest.approx((full.F_M, full.F_C), abs=1e-4)
    before = outputs(ex)
    ex.boxes["Name Mover"].value = False
    reduced = ablation.faithfulness(model, setup.ioi, values,
                                    discovery.circuit([classes["S-Inhibition"], classes["Induction"]]))
    got = ex.faithfulness()
    assert (got.F_M, got.F_C) == pytest.approx((reduced.F_M, reduced.F_C), abs=1e-4)
    assert got.F_C != pytest.approx(full.F_C, abs=1e-3)  # the view really changed
    assert outputs(ex) != before
    assert f"{got.ratio:.3f}" in ex.chart.to_json()
    assert str(paper.NUMBERS["circuit.faithfulness"]["value"]) in ex.chart.to_json()


def test_ablation_subsets_cover_every_combination(model, classes, setup, values):
    ex = widgets.AblationExplorer(setup, classes, values)
    names, rows = ex.subsets()
    assert names == ["Name Mover", "S-Inhibition", "Induction"]  # the empty class is left out
    assert len(rows) == 8 and len({tuple(r["classes"]) for r in rows}) == 8
    # each row against ablation.faithfulness called directly on that subset's circuit (not the
    # widget's memoised method that produced the rows)
    for r in rows:
        direct = ablation.faithfulness(model, setup.ioi, values,
                                       discovery.circuit([classes[n] for n in r["classes"]]))
        assert r["F(C)"] == pytest.approx(direct.F_C, abs=1e-4), r["classes"]
    model_ld = metrics.logit_diff(model(setup.ioi.tokens), setup.ioi).mean().item()
    assert all(r["F(M)"] == pytest.approx(model_ld, abs=1e-4) for r in rows)
    assert len({round(r["F(C)"], 4) for r in rows}) > 1  # the subsets differ
    plots.ablation_explorer_chart(rows, names)  # every subset present: it builds


@pytest.fixture(scope="module")
def seven_classes():
    """All seven of the paper's classes found, each at its kept position (disjoint heads)."""
    return {"Name Mover": _class("Name Mover", [(2, 1), (2, 3)], "END"),
            "Negative Name Mover": _class("Negative Name Mover", [(2, 0)], "END"),
            "S-Inhibition": _class("S-Inhibition", [(1, 0), (1, 1)], "END"),
            "Induction": _class("Induction", [(0, 2), (1, 2)], "S2"),
            "Duplicate Token": _class("Duplicate Token", [(0, 0)], "S2"),
            "Previous Token": _class("Previous Token", [(0, 1)], "S1+1"),
            "Backup Name Mover": _class("Backup Name Mover", [(2, 2)], "END")}


def test_every_box_ticked_is_the_full_circuit(model, seven_classes, setup, values):
    """The static chart's default view (every checkbox ticked) and the live widget's both give
    F(C) of the whole circuit: no found class is left out of the circuit for want of a box."""
    ex = widgets.AblationExplorer(setup, seven_classes, values)
    full = ablation.faithfulness(model, setup.ioi, values, discovery.circuit(seven_classes.values()))
    assert ex.faithfulness().F_C == pytest.approx(full.F_C, abs=1e-4)  # the live widget
    names, rows = ex.subsets()
    assert names == list(seven_classes)  # every class has a checkbox
    (all_ticked,) = [r for r in rows if set(r["classes"]) == set(names)]
    assert all_ticked["F(C)"] == pytest.approx(full.F_C, abs=1e-4)
    # a class that matters: leaving one out changes F(C), so the check above has teeth
    without_pt = ablation.faithfulness(model, setup.ioi, values, discovery.circuit(
        [c for n, c in seven_classes.items() if n != "Previous Token"]))
    assert without_pt.F_C != pytest.approx(full.F_C, abs=1e-3)


def test_classes_beyond_the_checkbox_limit_stay_in_the_circuit(model, seven_classes, setup, values):
    ex = widgets.AblationExplorer(setup, seven_classes, values)
    names, rows = ex.subsets(limit=2)
    assert names == ["Name Mover", "S-Inhibition"] and len(rows) == 4  # the two largest, in order
    full = ablation.faithfulness(model, setup.ioi, values, discovery.circuit(seven_classes.values()))
    (all_ticked,) = [r for r in rows if set(r["classes"]) == set(names)]
    assert all_ticked["F(C)"] == pytest.approx(full.F_C, abs=1e-4)
    assert ex.always_kept(limit=2) == [n for n in seven_classes if n not in names]
