"""The book pipeline: parameters injected, failures named, no stale output, offline staging.

Fast tests use tiny chapters written into tmp_path; the test marked ``book`` runs every real
chapter on the offline stand-in model and builds the book (shared with test_book_render.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
import yaml

from ioi_helpers import cache, pipeline
from ioi_helpers.results import RESULTS_ENV_VAR
from conftest import BOOK_TEST_MODEL, REPO, SCALE_TEST_CHAPTER, SCALE_TEST_MODEL, fresh_env

HEADER = "# %% [markdown]\n# # A tiny chapter\n\n"
PARAMS = '# %% tags=["parameters"]\nmodel_name = None\nn = 1\n\n'
GOOD = '# %%\nprint(f"model={model_name} n={n}")\n'
BAD = '# %%\nx = 1\n\n# %%\ny = 2\nz = y / (x - 1)\n'  # cell 4, line 11: ZeroDivisionError
CHART = ('# %%\nimport pandas as pd\nfrom ioi_helpers import plots\n'
         'plots.bar_chart(pd.DataFrame({"k": ["a", "b"], "v": [1, -1]}), "k", "v")\n')


def write_chapter(folder, name, *cells):
    path = folder / f"{name}.py"
    path.write_text("".join([HEADER, *cells]))
    return path


def leftovers(out_dir):
    return sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []


def test_run_chapter_injects_parameters(tmp_path):
    chapter = write_chapter(tmp_path, "tiny", PARAMS, GOOD)
    out = pipeline.run_chapter(chapter, {"model_name": "gpt2-random", "n": 3}, tmp_path / "out")
    assert out == tmp_path / "out" / "tiny.ipynb"
    assert leftovers(tmp_path / "out") == ["tiny.ipynb"]  # no temporary file left behind
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'model_name = "gpt2-random"' in injected[0].source
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "model=gpt2-random n=3" in printed
    assert nb.metadata.papermill.parameters == {"model_name": "gpt2-random", "n": 3}


def test_failing_cell_names_chapter_and_cell_and_leaves_no_output(tmp_path):
    out_dir = tmp_path / "out"
    chapter = write_chapter(tmp_path, "broken", PARAMS, GOOD)
    pipeline.run_chapter(chapter, {"model_name": "x"}, out_dir)
    assert leftovers(out_dir) == ["broken.ipynb"]  # a good run's output, now stale

    write_chapter(tmp_path, "broken", PARAMS, BAD)
    with pytest.raises(pipeline.ChapterError) as err:
        pipeline.run_chapter(chapter, {"model_name": "x"}, out_dir)
    first_line = str(err.value).splitlines()[0]
    assert first_line == "chapter broken failed at cell 4 (line 11): `y = 2`"
    assert "ZeroDivisionError: division by zero" in str(err.value)
    assert leftovers(out_dir) == []  # the stale copy is gone and nothing new was written


def test_chapter_without_parameters_cell_is_refused(tmp_path):
    chapter = write_chapter(tmp_path, "noparams", "# %%\nprint(1)\n")
    with pytest.raises(pipeline.ChapterError, match="noparams.*no cell tagged 'parameters'"):
        pipeline.run_chapter(chapter, {"model_name": "x"}, tmp_path / "out")


def make_book(root, entries):
    """A minimal book tree: config, a toc with ``entries`` (book/NAME), book/intro.md."""
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "_config.yml").write_text((REPO / "_config.yml").read_text())
    toc = {"format": "jb-book", "root": "book/intro", "chapters": [{"file": f"book/{e}"} for e in entries]}
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))


def test_toc_entries_without_source_are_named(tmp_path):
    make_book(tmp_path, ["01_here", "02_missing", "03_missing_too"])
    write_chapter(tmp_path / "book", "01_here", PARAMS, GOOD)
    with pytest.raises(FileNotFoundError, match="book/02_missing, book/03_missing_too"):
        pipeline.chapter_paths(tmp_path)


def test_cli_fails_naming_chapter_and_cell(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV_VAR, "")  # main() points it at OUT/results; restored after
    make_book(tmp_path, ["01_ok", "02_bad"])
    write_chapter(tmp_path / "book", "01_ok", PARAMS, GOOD)
    write_chapter(tmp_path / "book", "02_bad", PARAMS, BAD)
    out = tmp_path / "out"
    code = pipeline.main(["--root", str(tmp_path), "--out", str(out), "--model", "m", "-p", "n", "2"])
    assert code == 1
    captured = capsys.readouterr()
    assert "01_ok:" in captured.out  # its wall time
    assert "chapter 02_bad failed at cell 4 (line 11): `y = 2`" in captured.err
    assert leftovers(out / "executed") == ["01_ok.ipynb"]
    assert not (out / "html").exists()
    assert pipeline.main(["--root", str(tmp_path), "--chapters", "03_nope", "--no-build"]) == 2
    assert "unknown chapter(s) 03_nope" in capsys.readouterr().err


def test_stage_book_makes_charts_offline_and_keeps_only_run_chapters(tmp_path):
    make_book(tmp_path, ["01_chart", "02_not_run"])
    write_chapter(tmp_path / "book", "01_chart", PARAMS, CHART)
    write_chapter(tmp_path / "book", "02_not_run", PARAMS, GOOD)
    (tmp_path / "book" / "_static").mkdir()
    (tmp_path / "book" / "_static" / "extra.css").write_text("")
    executed = pipeline.run_chapter(tmp_path / "book" / "01_chart.py", {"model_name": "m"}, tmp_path / "out")

    site = pipeline.stage_book([executed], tmp_path / "out", root=tmp_path)
    toc = yaml.safe_load((site / "_toc.yml").read_text())
    assert toc["chapters"] == [{"file": "book/01_chart"}]
    assert sorted(p.name for p in (site / "book").iterdir()) == ["01_chart.ipynb", "intro.md"]
    assert {"vega-bundle.js", "extra.css"} <= {p.name for p in (site / "_static").iterdir()}
    nb = nbformat.read(site / "book" / "01_chart.ipynb", as_version=4)
    [chart] = [o for c in nb.cells for o in c.get("outputs", []) if "data" in o and "text/html" in o.data]
    assert chart.data["text/html"].startswith('<div class="ioi-chart">')
    assert "cdn.jsdelivr" not in chart.data["text/html"]
    assert not any(k.startswith("application/vnd.vegalite") for k in chart.data)


def test_parameter_values_are_python_literals_or_strings():
    assert [pipeline._value(v) for v in ("3", "0.5", "True", "None", "[1, 2]", "gpt2", "a b")] == [
        3, 0.5, True, None, [1, 2], "gpt2", "a b"]


@pytest.mark.book
def test_every_chapter_runs_on_the_stand_in_model_and_the_book_builds(built_book):
    chapters = pipeline.chapter_paths(REPO)
    assert chapters, "_toc.yml lists no chapter"
    for path in chapters:
        nb = nbformat.read(built_book / "executed" / f"{path.stem}.ipynb", as_version=4)
        assert nb.metadata.papermill.parameters["model_name"] == BOOK_TEST_MODEL
    html = built_book / "html"
    for entry in pipeline.toc_files(pipeline.read_toc(REPO)):
        assert (html / f"{entry}.html").is_file(), f"{entry} was not built"


@pytest.mark.book
def test_the_book_ran_from_an_empty_cache_of_its_own(built_book):
    """built_book starts from an empty discovery cache (conftest.fresh_env): the chapters'
    discovery results land there, so none was read back from an earlier run."""
    assert list((built_book / "cache").glob("*.pt")), "the chapters wrote nothing to the fresh cache"


def test_tests_never_touch_the_users_cache(tmp_path):
    default = cache.Path.home() / ".cache" / "ioi-circuit-book"
    assert cache.cache_dir() != default and str(cache.cache_dir()).startswith(str(tmp_path.parent))
    env = fresh_env(tmp_path)
    assert env[cache.CACHE_ENV_VAR] == str(tmp_path / "cache") and not any((tmp_path / "cache").iterdir())


@pytest.mark.book
def test_chapter_2_runs_at_gpt2_small_scale(tmp_path):
    """The scale check: chapter 2 (path patching from all 144 heads, copy scores of every
    head) executes on the GPT-2-small architecture with random weights."""
    cmd = [sys.executable, "-m", "ioi_helpers.pipeline", "--model", SCALE_TEST_MODEL,
           "--chapters", SCALE_TEST_CHAPTER, "--no-build", "--out", str(tmp_path)]
    # an empty cache: the path patching at GPT-2-small scale is computed, not read back
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=fresh_env(tmp_path))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    nb = nbformat.read(tmp_path / "executed" / f"{SCALE_TEST_CHAPTER}.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["model_name"] == SCALE_TEST_MODEL
    recorded = json.loads((tmp_path / "results" / f"{SCALE_TEST_CHAPTER}.json").read_text())
    assert recorded["model"].startswith("gpt2-random")
    assert "classes.Name Mover" in recorded["values"]
    assert list((tmp_path / "cache").glob("path_patch-*.pt")), "the path patching was not computed here"
