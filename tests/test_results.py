"""The results files: provenance recorded by ``results.start``, runs that cannot be mixed set
aside by ``load_all(one_run=True)`` (and so by the scorecard and the appendix), and unreadable
or foreign files reported in one line naming the file, never a crash."""

from __future__ import annotations

import json
import shutil

import nbformat
import pandas as pd
import pytest

from conftest import REPO
from ioi_helpers import models, paper, pipeline, results

BOOK = REPO / "book"


@pytest.fixture(autouse=True)
def results_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture
def in_book(monkeypatch):
    """Chapters run with the book folder as their working directory (pipeline, Jupyter): there
    ``start`` reads each chapter's own defaults."""
    monkeypatch.chdir(BOOK)


def test_start_records_provenance(in_book):
    results.start("02_name_movers", "ioi-tiny", {"model": "ioi-tiny", "N": 20, "seed": 0, "threshold": 0.1})
    prov = results.load("02_name_movers")["provenance"]
    assert prov["model"] == "ioi-tiny" and prov["code"] == results.code_hash()
    assert prov["sizes"] == {"n_prompts": 20, "seed": 0}  # N read as n_prompts; not the threshold
    assert prov["overridden"] == ["n_prompts"]  # chapter 2's default N is 100, its seed 0


@pytest.mark.parametrize("chapter", [p.stem for p in pipeline.chapter_paths(REPO)])
def test_chapter_defaults_are_the_parameters_cells(chapter):
    """Against the pipeline's own reading of the parameters cell (jupytext, then ast)."""
    want = {k: v for k, (_, v) in pipeline._parameter_assignments(BOOK / f"{chapter}.py").items()
            if k in results.RUN_KEYS}
    assert results.chapter_defaults(chapter, BOOK) == want
    assert results.chapter_defaults(chapter, REPO) is None  # no such chapter there


def test_chapter_defaults_from_a_notebook_alone(tmp_path):
    shutil.copy(BOOK / "01_task.ipynb", tmp_path)
    want = {k: v for k, (_, v) in pipeline._parameter_assignments(BOOK / "01_task.py").items()
            if k in results.RUN_KEYS}
    assert results.chapter_defaults("01_task", tmp_path) == want and want["n_prompts"] == 500


def test_two_chapters_on_different_models_are_not_mixed(in_book):
    results.start("02_name_movers", "gpt2-random(seed=0)", {"N": 100, "seed": 0})
    results.record("02_name_movers", "baseline.x", 1.0)
    results.start("03_s_inhibition", "ioi-tiny", {"N": 100, "seed": 0})
    results.record("03_s_inhibition", "baseline.y", 2.0)
    assert set(results.load_all()) == {"02_name_movers", "03_s_inhibition"}  # as stored
    run = results.load_all(one_run=True)
    assert set(run) == {"03_s_inhibition"}  # the latest run's
    [note] = run.notes
    assert note.startswith("02_name_movers: set aside") and "gpt2-random(seed=0), not ioi-tiny" in note
    # ioi-planted and ioi-planted(seed=0) are one model (load_model's default seed)
    results.start("04_induction_and_duplicate_token", "ioi-planted(seed=0)", {"N": 100})
    results.start("appendix_stand_in_model", "ioi-planted", {"n_prompts": 100})  # both at their default N
    assert set(results.load_all(one_run=True)) == {"04_induction_and_duplicate_token", "appendix_stand_in_model"}


def test_sizes_mix_only_when_a_run_set_them(in_book):
    """Chapter 1's default N is 500, the others' 100: a run at the defaults is one run; a
    chapter rerun with -p n_prompts 20 is not."""
    results.start("01_task", "m", {"n_prompts": 500, "seed": 0})
    results.start("02_name_movers", "m", {"N": 100, "seed": 0})
    assert set(results.load_all(one_run=True)) == {"01_task", "02_name_movers"}
    results.start("03_s_inhibition", "m", {"N": 20, "seed": 0})  # a later partial run, -p n_prompts 20
    run = results.load_all(one_run=True)
    assert set(run) == {"03_s_inhibition"}
    assert any(n.startswith("02_name_movers: set aside") and "n_prompts 100, not 20" in n for n in run.notes)
    results.start("01_task", "m", {"n_prompts": 20, "seed": 0})  # the same -p on chapter 1: one run
    assert set(results.load_all(one_run=True)) == {"01_task", "03_s_inhibition"}


def test_other_code_is_not_mixed(tmp_path, monkeypatch):
    """The package copied aside; one module edited between two chapters' runs (each run a new
    process: the hash is read again)."""
    copy = tmp_path / "pkg"
    shutil.copytree(results.HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(results, "HERE", copy)
    monkeypatch.setattr(results, "_CODE_HASH", [])
    results.start("02_name_movers", "m", {"N": 100})
    with open(copy / "metrics.py", "a") as f:
        f.write("\n# edited\n")
    monkeypatch.setattr(results, "_CODE_HASH", [])  # the next chapter's kernel
    results.start("03_s_inhibition", "m", {"N": 100})
    run = results.load_all(one_run=True)
    assert set(run) == {"03_s_inhibition"} and "other code" in run.notes[0]
    monkeypatch.setattr(results, "_CODE_HASH", [])
    results.start("04_induction_and_duplicate_token", "m", {"N": 100})  # same code as chapter 3
    assert set(results.load_all(one_run=True)) == {"03_s_inhibition", "04_induction_and_duplicate_token"}


BAD = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: "",
    "a list": lambda good: "[1, 2, 3]",
    "another shape": lambda good: json.dumps({"name": "x", "data": [1]}),
    "another chapter's": lambda good: good.replace('"chapter": "02_name_movers"', '"chapter": "03_s_inhibition"'),
    "values without entries": lambda good: json.dumps({**json.loads(good), "values": {"a": 1.0}}),
    "not text": lambda good: "\udcff",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_file_is_reported_in_one_line_and_the_chapter_reruns(results_folder, kind):
    results.start("02_name_movers", "m", {"N": 100})
    results.record("02_name_movers", "baseline.x", 1.0)
    results.start("03_s_inhibition", "m", {"N": 100})
    path = results_folder / "02_name_movers.json"
    good = path.read_text()
    bad = BAD[kind](good)
    if kind == "not text":
        path.write_bytes(b"\xff\xfe{")
    else:
        path.write_text(bad)
    for one_run in (False, True):
        loaded = results.load_all(one_run=one_run)
        assert set(loaded) == {"03_s_inhibition"}
        [note] = loaded.notes
        assert "\n" not in note and note.startswith(str(path)) and "rerun chapter 02_name_movers" in note
    with pytest.raises(ValueError, match="02_name_movers.json"):
        results.load("02_name_movers")
    results.start("02_name_movers", "m", {"N": 100})  # the chapter reruns: its file is new
    results.record("02_name_movers", "baseline.x", 1.0)
    loaded = results.load_all(one_run=True)
    assert set(loaded) == {"02_name_movers", "03_s_inhibition"} and not loaded.notes


def test_a_file_of_an_older_version_is_set_aside(results_folder):
    results.start("03_s_inhibition", "m", {"N": 100})
    old = {"chapter": "02_name_movers", "model": "m", "settings": {}, "calibrated": [], "values": {}}
    (results_folder / "02_name_movers.json").write_text(json.dumps(old))
    run = results.load_all(one_run=True)
    assert set(run) == {"03_s_inhibition"} and "without provenance" in run.notes[0]


# ----------------------------------------------------------------------------- the pages


def test_the_scorecard_sets_aside_another_models_chapter_and_a_truncated_file(tmp_path, results_folder):
    """Chapter 8 ran earlier on another model, chapter 1's file is truncated: the page builds,
    counts both chapters' numbers as not run and says why, one line each."""
    by_chapter: dict[str, list[str]] = {}
    for key, spec in paper.NUMBERS.items():
        by_chapter.setdefault(spec["chapter"], []).append(key)
    order = ["08_adversarial_examples"] + sorted(c for c in by_chapter if c != "08_adversarial_examples")
    for chapter in order:
        results.start(chapter, "gpt2-random(seed=0)" if chapter == "08_adversarial_examples" else "ioi-tiny",
                      {"N": 10})
        for key in by_chapter[chapter]:
            value = paper.NUMBERS[key]["value"]
            results.record(chapter, key, None if value is None else value + 10, {"N": 10})
    truncated = results_folder / "01_task.json"
    truncated.write_text(truncated.read_text()[:40])
    out = pipeline.run_chapter(BOOK / "scorecard.py", {"model_name": "ioi-tiny", "results_dir": str(results_folder)},
                               tmp_path / "out")
    nb = nbformat.read(out, as_version=4)
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Set aside, counted as not run" in text
    assert f"- {truncated}: unreadable (JSONDecodeError" in text
    assert "- 08_adversarial_examples: set aside" in text and "model gpt2-random(seed=0), not ioi-tiny" in text
    not_run = sum(s["chapter"] in ("01_task", "08_adversarial_examples") for s in paper.NUMBERS.values())
    assert not_run and f"**{not_run}** not run" in text
    assert "Model(s): **ioi-tiny**" in text  # gpt2-random is not among the models shown


def test_the_appendix_lists_only_classes_of_one_run(results_folder, in_book):
    """Chapter 2 reran with -p n_prompts 20 before chapter 6's run at the defaults: the appendix
    shows chapter 6's class, not chapter 2's, and says why (the cell run as in
    test_appendix_classes.py)."""
    results.start("02_name_movers", "m", {"N": 100})
    results.record("02_name_movers", "classes.Name Mover", [[1, 2]])
    results.start("06_backup_name_movers", "m", {"n_prompts": 20})
    results.record("06_backup_name_movers", "classes.Backup Name Mover", [[2, 0]])
    nb = pipeline.load_chapter(BOOK / "appendix_stand_in_model.py")
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and 'key.removeprefix("classes.")' in c.source)
    shown = []
    ns = {"results": results, "paper": paper, "pd": pd, "models": models, "BOOK_MODEL": "m",
          "CHAPTER": "appendix_stand_in_model", "display": shown.append, "Markdown": lambda x: x}
    exec(compile(cell, "appendix", "exec"), ns)
    assert ns["recorded"] == {"Backup Name Mover": [(2, 0)]}
    assert any("02_name_movers: set aside" in str(s) and "n_prompts 100, not 20" in str(s) for s in shown)
