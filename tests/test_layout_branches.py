"""Which branch a page takes on which model (issue 20, item 4): the authors' lists (their
circuit, K sets, naive circuit) and the head-by-head comparison with the paper where the
paper's head layout holds (``gpt2``, ``gpt2-planted``), the discovered circuit elsewhere; the
scorecard scores the recorded classes against the planted truth and the paper's heads.

The unit tests use stand-in model objects (a name and a 12 x 12 or 8 x 4 shape): the branches
only read those. The ``book`` tests read chapter 7 and the scorecard executed on
``gpt2-planted`` (the ``built_paper_layout_book`` fixture: the whole book)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import nbformat
import pytest

from conftest import REPO
from ioi_helpers import autodiscovery, discovery, layout, paper, pipeline, results

Head = tuple[int, int]
GPT2_PLANTED = SimpleNamespace(ioi_model_name="gpt2-planted(seed=0)", cfg=SimpleNamespace(n_layers=12, n_heads=12))
IOI_PLANTED = SimpleNamespace(ioi_model_name="ioi-planted(seed=0)", cfg=SimpleNamespace(n_layers=8, n_heads=4))
GPT2 = SimpleNamespace(ioi_model_name="gpt2", cfg=SimpleNamespace(n_layers=12, n_heads=12))
PAPER_HEADS = sorted(h for hs in paper.CIRCUIT.values() for h in hs)


def _classes(spec: dict[str, list[Head]]) -> dict[str, discovery.HeadClass]:
    """HeadClass objects with only names, heads and kept positions (what the assemblers read)."""
    return {n: discovery.HeadClass(n, list(h), "", None, None, "", 0.0, 0.0, paper.KEPT_AT[n])
            for n, h in spec.items()}


# ----------------------------------------------------------------------------- kept positions


def test_authors_kept_puts_each_paper_head_at_its_class_position():
    circ = layout.authors_kept(paper.CIRCUIT)
    assert sorted(circ) == PAPER_HEADS and len(circ) == 26
    assert circ[(9, 9)] == ["END"] and circ[(5, 5)] == ["S2"] and circ[(2, 2)] == ["S1+1"]
    assert circ[(9, 0)] == ["END"]  # a Backup Name Mover: the authors' "name mover" class


def test_a_head_in_two_classes_is_kept_as_the_authors_code_keeps_it():
    """RELEVANT_TOKENS is filled class by class in the authors' order, so the later class wins,
    whatever order the classes come in; the book's own assembler keeps both positions."""
    two = {"Induction": [(5, 5)], "S-Inhibition": [(5, 5), (7, 3)]}  # S-Inhibition before Induction
    assert layout.authors_kept(two)[(5, 5)] == ["S2"]
    assert layout.in_two_classes(two) == {(5, 5): ["S-Inhibition", "Induction"]}
    assert sorted(discovery.circuit(_classes(two))[(5, 5)]) == ["END", "S2"]
    assert layout.authors_kept({"Duplicate Token": [(0, 1)], "Previous Token": [(0, 1)]})[(0, 1)] == ["S1+1"]
    assert layout.in_two_classes(paper.CIRCUIT) == {}  # the paper's list has no such head
    with pytest.raises(ValueError, match="not a class"):
        layout.authors_kept({"Mover": [(1, 1)]})


# ----------------------------------------------------------------------------- chapter 7's circuits


def test_the_paper_layout_evaluates_the_authors_circuit_and_the_discovered_one_as_a_variant():
    found = _classes(paper.CIRCUIT)
    ev = layout.evaluated_circuit(GPT2_PLANTED, found, discovery.circuit(found))
    assert ev.source == "authors" and ev.circuit == layout.authors_kept(paper.CIRCUIT)
    assert ev.same and layout.differences(ev).empty
    fewer = _classes({**paper.CIRCUIT, "Backup Name Mover": paper.CIRCUIT["Backup Name Mover"][:-1],
                      "Induction": paper.CIRCUIT["Induction"] + [(5, 1)]})
    ev = layout.evaluated_circuit(GPT2, fewer, discovery.circuit(fewer))
    assert ev.source == "authors" and not ev.same and len(ev.circuit) == 26 and len(ev.variant) == 26
    diff = layout.differences(ev).set_index("class")
    assert list(diff.index) == ["Backup Name Mover", "Induction"]
    assert diff.loc["Backup Name Mover", "missing"] == "11.9" and diff.loc["Induction", "extra"] == "5.1"


def test_a_head_in_two_discovered_classes_is_documented():
    spec = {**paper.CIRCUIT, "Induction": paper.CIRCUIT["Induction"] + [(7, 3)]}  # 7.3 is S-Inhibition too
    found = _classes(spec)
    ev = layout.evaluated_circuit(GPT2_PLANTED, found, discovery.circuit(found))
    assert not ev.same and sorted(ev.variant[(7, 3)]) == ["END", "S2"]
    assert len(ev.notes) == 1 and ev.notes[0].startswith("7.3 is in S-Inhibition and Induction")
    assert "the authors' code would keep it at S2 only" in ev.notes[0]


def test_other_layouts_evaluate_the_discovered_circuit_alone():
    found = _classes({"Name Mover": [(4, 0)], "S-Inhibition": [(3, 1)], "Previous Token": []})
    ev = layout.evaluated_circuit(IOI_PLANTED, found, discovery.circuit(found))
    assert ev.source == "discovered" and ev.variant is None
    assert ev.circuit == {(3, 1): ["END"], (4, 0): ["END"]} and "Previous Token" not in ev.classes
    big_but_not_gpt2 = SimpleNamespace(ioi_model_name="gpt2-random(seed=0)", cfg=GPT2.cfg)
    assert layout.evaluated_circuit(big_but_not_gpt2, found, discovery.circuit(found)).source == "discovered"


def test_naive_circuit_is_the_authors_13_heads_on_the_paper_layout():
    found = _classes(paper.CIRCUIT)
    classes, circ, label = layout.naive_circuit(GPT2_PLANTED, found)
    assert sorted(circ) == sorted(h for hs in paper.NAIVE_CIRCUIT.values() for h in hs) and len(circ) == 13
    assert "authors" in label and circ[(5, 9)] == ["S2"]
    classes, circ, label = layout.naive_circuit(IOI_PLANTED, found)  # the same classes, another layout
    assert len(circ) == 16 and "first steps" in label  # the five first classes of the 26, all kept
    assert set(classes) == {"Name Mover", "S-Inhibition", "Induction", "Duplicate Token", "Previous Token"}


def test_minimality_uses_the_authors_k_sets_only_on_the_paper_layout():
    circ = layout.authors_kept(paper.CIRCUIT)
    own = {v: ("own",) for v in circ}
    k = layout.minimality_k(GPT2_PLANTED, circ, own, own, "code", "arena")
    assert k["authors"] and k["k"] == {v: paper.MINIMALITY_K["code"][v] for v in circ}
    assert k["variant"][(9, 0)] == paper.MINIMALITY_K["arena"][(9, 0)]
    k = layout.minimality_k(GPT2_PLANTED, [*circ, (1, 1)], own | {(1, 1): ((2, 2),)}, own, "code", "arena")
    assert k["k"][(1, 1)] == ((2, 2),)  # a head outside the authors' sets: the own rule
    k = layout.minimality_k(IOI_PLANTED, circ, own, own, "code", "arena")
    assert not k["authors"] and set(k["k"].values()) == {("own",)}


def test_autodiscovery_scores_against_the_paper_where_the_layout_is_the_papers():
    planted = {c: list(h) for c, h in paper.CIRCUIT.items()}
    refs = autodiscovery.references(SimpleNamespace(**vars(GPT2_PLANTED), planted=planted))
    assert set(refs) == {"planted", "paper"} and refs["paper"] == refs["planted"]
    assert set(autodiscovery.references(SimpleNamespace(**vars(IOI_PLANTED), planted=planted))) == {"planted"}
    assert set(autodiscovery.references(GPT2)) == {"paper"}


def test_head_match_counts_heads_and_exact_classes():
    found = {**paper.CIRCUIT, "Induction": [(5, 5), (5, 8), (5, 9)], "S-Inhibition": [(7, 3), (7, 9), (8, 6), (8, 10),
                                                                                       (1, 1)]}
    found.pop("Previous Token")
    table, s = layout.head_match(found, paper.CIRCUIT, "paper")
    assert (s["heads"], s["of_heads"], s["classes"], s["of_classes"]) == (26 - 1 - 2, 26, 4, 7)
    assert s["not_run"] == ["Previous Token"] and list(table["class"]) == list(paper.CIRCUIT)


# ----------------------------------------------------------------------------- the pages' sources


@pytest.mark.parametrize("page", ["03_s_inhibition", "05_previous_token", "07_circuit_evaluation", "scorecard"])
def test_gpt2_small_itself_is_asked_only_for_the_stand_in_note(page):
    """'The weights are GPT-2 small's' decides only whether a page says it is not GPT-2 small;
    every other branch asks about the head layout."""
    lines = (REPO / "book" / f"{page}.py").read_text().splitlines()
    for i, line in enumerate(lines):
        if "is_gpt2_small" in line:
            assert re.match(r"\s*if not models\.is_gpt2_small\(model\):$", line), line
            assert "paper.stand_in_note(MODEL)" in lines[i + 1], lines[i + 1]


# ----------------------------------------------------------------------------- the scorecard


def _scorecard_text(tmp_path, monkeypatch, model: str, classes: dict, truth: dict | None) -> str:
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path / "results"))
    for chapter in sorted({spec["chapter"] for spec in paper.NUMBERS.values()}):
        results.start(chapter, model, {"N": 10})
        for key, spec in paper.NUMBERS.items():
            if spec["chapter"] == chapter:
                results.record(chapter, key, spec["value"], {"N": 10})
    for name, heads in classes.items():
        results.record("07_circuit_evaluation", f"classes.{name}", [list(h) for h in heads])
    if truth is not None:
        results.record("07_circuit_evaluation", "truth.planted", {c: [list(h) for h in hs] for c, hs in truth.items()})
    out = pipeline.run_chapter(REPO / "book" / "scorecard.py",
                               {"model_name": model, "results_dir": str(tmp_path / "results")}, tmp_path / "out")
    nb = nbformat.read(out, as_version=4)
    return "".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/html", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_scorecard_on_gpt2_planted_scores_against_the_truth_and_the_papers_heads(tmp_path, monkeypatch):
    found = {**paper.CIRCUIT, "Backup Name Mover": paper.CIRCUIT["Backup Name Mover"][:-1]}  # 11.9 missed
    text = _scorecard_text(tmp_path, monkeypatch, "gpt2-planted(seed=0)", found, paper.CIRCUIT)
    assert "**Against the planted truth:** **25 of 26** planted heads found in their class; **6 of 7 classes**" in text
    assert "**Against the paper's heads:** **25 of 26** of the paper's heads found" in text
    assert "recovers a circuit planted at the paper's heads, not that GPT-2 small has it" in text
    assert "for reference only" not in text


def test_scorecard_elsewhere_counts_only_against_the_truth(tmp_path, monkeypatch):
    truth = {"Name Mover": [(4, 0), (4, 2)], "S-Inhibition": [(3, 1)]}
    text = _scorecard_text(tmp_path, monkeypatch, "ioi-planted(seed=0)", truth, truth)
    assert "**Against the planted truth:** **3 of 3** planted heads found in their class; **2 of 2 classes**" in text
    assert "Against the paper's heads" not in text and "for reference only" in text


# ----------------------------------------------------------------------------- executed on gpt2-planted

@pytest.mark.book
def test_chapter_7_on_gpt2_planted_takes_the_paper_layout_branches(built_paper_layout_book):
    values = {k: e["value"] for k, e in
              json.loads((built_paper_layout_book / "results" / "07_circuit_evaluation.json").read_text())["values"].items()}
    assert values["circuit.evaluated"] == "authors"
    assert sorted(map(tuple, values["circuit.heads"])) == PAPER_HEADS
    assert values["minimality.k_sets"] == "code"  # the authors' K sets
    for key in ("minimality.0.1", "minimality.5.5", "minimality.10.7", "minimality.9.0", "minimality.11.9"):
        assert isinstance(values[key], float), key  # the paper-head minimality records
    assert sorted(map(tuple, values["circuit.naive.heads"])) == sorted(h for hs in paper.NAIVE_CIRCUIT.values()
                                                                      for h in hs)
    assert values["circuit.discovered.same_as_authors"] is True  # the discovery chapters found the paper's heads
    assert {c: sorted(map(tuple, h)) for c, h in values["truth.planted"].items()} == \
        {c: sorted(h) for c, h in paper.CIRCUIT.items()}


@pytest.mark.book
def test_scorecard_on_gpt2_planted_reads_the_planted_heads_against_the_paper(built_paper_layout_book):
    nb = nbformat.read(built_paper_layout_book / "executed" / "scorecard.ipynb", as_version=4)
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "**Against the planted truth:**" in text and "**Against the paper's heads:**" in text
    assert "not that GPT-2 small has it" in text
    # the whole book ran, chapters 2-6 recovered the planted heads: the paper's 26 of 26
    recorded = re.search(r"Against the paper's heads:\*\* \*\*(\d+) of 26\*\*", text)
    assert recorded is not None and recorded.group(1) == "26", recorded


@pytest.mark.parametrize("page", ["03_s_inhibition", "05_previous_token"])
def test_head_by_head_comparison_only_on_the_paper_layout(page):
    calls = [l for l in (REPO / "book" / f"{page}.py").read_text().splitlines() if "paper.compare_heads(" in l]
    assert calls and all(l.rstrip().endswith("if models.has_paper_layout(model) else {}") for l in calls), calls
