"""The book pipeline: parameters injected, failures named, no stale output, offline staging.

Fast tests use tiny chapters written into tmp_path; the test marked ``book`` runs every real
chapter on the offline stand-in model and builds the book (shared with test_book_render.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest
import yaml

from ioi_helpers import cache, forkserver, pipeline
from ioi_helpers.results import RESULTS_ENV_VAR
from conftest import BOOK_TEST_MODEL, REPO, SCALE_TEST_CHAPTER, SCALE_TEST_MODEL, fresh_env

HEADER = "# %% [markdown]\n# # A tiny chapter\n\n"
PARAMS = '# %% tags=["parameters"]\nmodel_name = None\nn = 1\n\n'
GOOD = '# %%\nprint(f"model={model_name} n={n}")\n'
BAD = '# %%\nx = 1\n\n# %%\ny = 2\nz = y / (x - 1)\n'  # cell 4 (line 11), raises at line 13
# cell 3 defines a function; cell 5 (line 15) calls it at line 17; json raises inside the library
DEEP = ('# %%\ndef parse(text):\n    import json\n    return json.loads(text)\n\n'
        '# %%\nok = 1\n\n# %%\nprint("ok")\ndata = parse("{")\n')
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
    assert first_line == "chapter broken failed at cell 4, line 13: `z = y / (x - 1)`"
    assert str(err.value).splitlines()[1] == "ZeroDivisionError: division by zero"
    assert "Traceback" not in str(err.value) and "ZeroDivisionError" in err.value.trace
    assert leftovers(out_dir) == []  # the stale copy is gone and nothing new was written


def test_failing_line_is_the_cells_own_frame_and_names_the_library_frame(tmp_path):
    chapter = write_chapter(tmp_path, "deep", PARAMS, DEEP)
    with pytest.raises(pipeline.ChapterError) as err:
        pipeline.run_chapter(chapter, {}, tmp_path / "out")  # nothing injected: cells not shifted
    lines = str(err.value).splitlines()
    assert lines[0] == 'chapter deep failed at cell 5, line 18: `data = parse("{")`'
    assert lines[1].startswith("JSONDecodeError: ")
    assert lines[2].startswith("  raised in JSONDecoder.raw_decode (") and "json" in lines[2]
    assert pipeline.chapter_parameters(chapter) == {"model_name": "model_name = None", "n": "n = 1"}


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


def test_cli_fails_naming_chapter_and_cell(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV_VAR, "")  # main() points it at OUT/results; restored after
    make_book(tmp_path, ["01_ok", "02_bad"])
    write_chapter(tmp_path / "book", "01_ok", PARAMS, GOOD)
    write_chapter(tmp_path / "book", "02_bad", PARAMS, BAD)
    out = tmp_path / "out"
    code = pipeline.main(["--root", str(tmp_path), "--out", str(out), "--model", "gpt2-random",
                          "-p", "n", "2"])
    assert code == 1
    captured = capfd.readouterr()  # file descriptors: the kernel's own stderr is caught too
    assert "[1/2] 01_ok:" in captured.out  # its wall time
    assert "[2/2] 02_bad FAILED" in captured.err
    assert "chapter 02_bad failed at cell 4, line 13: `z = y / (x - 1)`" in captured.err
    assert "\r" not in captured.out + captured.err  # no TTY: no live progress bar
    assert "IPKernelApp" not in captured.err and "Traceback" not in captured.err
    assert "rerun with --traceback" in captured.err
    assert leftovers(out / "executed") == ["01_ok.ipynb"]
    assert not (out / "html").exists()
    assert pipeline.main(["--root", str(tmp_path), "--chapters", "03_nope", "--no-build"]) == 2
    assert "unknown chapter(s) 03_nope" in capfd.readouterr().err


WARMTH = ('# %%\nimport os, sys\nprint("warm" if "transformer_lens.model_bridge" in sys.modules else "cold",'
          ' os.getcwd())\n')


def test_the_next_chapters_kernel_is_warmed_up_while_the_current_one_runs(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV_VAR, "")
    make_book(tmp_path, ["01_a", "02_b", "03_c"])
    for name in ("01_a", "02_b", "03_c"):
        write_chapter(tmp_path / "book", name, PARAMS, WARMTH)
    out = tmp_path / "out"
    base = ["--root", str(tmp_path), "--out", str(out), "--model", "gpt2-random", "--no-build"]

    def printed(name):
        nb = nbformat.read(out / "executed" / f"{name}.ipynb", as_version=4)
        return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs).split()

    book = str((tmp_path / "book").resolve())
    # launched one chapter ahead: the first kernel is cold
    assert pipeline.main([*base, "--no-fork-server"]) == 0
    assert [printed(n) for n in ("01_a", "02_b", "03_c")] == [["cold", book], ["warm", book], ["warm", book]]
    assert pipeline.main([*base, "--chapters", "02_b,03_c", "--no-warm-kernel"]) == 0
    assert [printed(n) for n in ("02_b", "03_c")] == [["cold", book], ["cold", book]]
    if forkserver.usable() is None:  # forked from the fork server (the default on the CPU, on Linux): all warm
        assert pipeline.main(base) == 0
        assert [printed(n) for n in ("01_a", "02_b", "03_c")] == [["warm", book], ["warm", book], ["warm", book]]


def test_unknown_parameter_is_refused_before_any_work(tmp_path, capfd):
    make_book(tmp_path, ["01_ok", "02_other"])
    write_chapter(tmp_path / "book", "01_ok", PARAMS, GOOD)
    write_chapter(tmp_path / "book", "02_other", '# %% tags=["parameters"]\nmodel_name = None\n'
                  'n_copy: int = 3  # annotated\n\n', GOOD.replace("n=", "n_copy=").replace("{n}", "{n_copy}"))
    out = tmp_path / "out"
    argv = ["--root", str(tmp_path), "--out", str(out), "--model", "gpt2-random"]
    assert pipeline.main([*argv, "-p", "n_cpy", "5"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: unknown parameter 'n_cpy' (did you mean 'n_copy'?): no chapter run here has it.")
    assert "  01_ok: model_name, n\n  02_other: model_name, n_copy" in err
    assert not out.exists()  # nothing ran
    # a key only one chapter has goes to that chapter alone
    chapters = pipeline.chapter_paths(tmp_path)
    shares = pipeline.parameters_for(chapters, {"model_name": "m", "n_copy": 5})
    assert [shares[p] for p in chapters] == [{"model_name": "m"}, {"model_name": "m", "n_copy": 5}]


def test_real_chapters_parameters_are_read_from_their_parameters_cell():
    names = pipeline.chapter_parameters(REPO / "book" / "01_task.py")
    assert list(names) == ["model_name", "n_prompts", "seed", "prepend_bos", "template_set"]
    assert names["n_prompts"].startswith("n_prompts = ")
    with pytest.raises(ValueError, match=r"'n_promts' \(did you mean 'n_prompts'\?\)"):
        pipeline.parameters_for([REPO / "book" / "01_task.py"], {"n_promts": 5})


def test_unknown_or_unreachable_model_fails_in_one_line_before_any_chapter(tmp_path, capfd, monkeypatch):
    make_book(tmp_path, ["01_ok"])
    write_chapter(tmp_path / "book", "01_ok", PARAMS, GOOD)
    out = tmp_path / "out"
    assert pipeline.main(["--root", str(tmp_path), "--out", str(out), "--model", "gtp2"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot load model 'gtp2': it is neither")
    assert "Offline alternatives: 'gpt2-random'" in err and "'ioi-tiny'" in err
    assert not out.exists()
    # gpt2 with an empty Hugging Face cache and the hub off: refused the same way, no download tried
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert pipeline.main(["--root", str(tmp_path), "--out", str(out), "--model", "gpt2"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "'gpt2': its weights are not cached" in err


def test_check_available_builds_nothing_and_knows_every_offline_model(tmp_path):
    from ioi_helpers import models

    for name in models.OFFLINE_MODELS:
        models.check_available(name)
    with pytest.raises(models.ModelUnavailableError, match="has no config.json"):
        models.check_available(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    models.check_available(str(tmp_path))


def test_progress_is_live_only_on_a_terminal_outside_ci(tmp_path, monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("CI", raising=False)
    assert pipeline.interactive(Stream(True)) and not pipeline.interactive(Stream(False))
    monkeypatch.setenv("CI", "true")
    assert not pipeline.interactive(Stream(True))
    # the live bar: chapter k of n and its cells, on the given stream
    import io

    buf = io.StringIO()
    chapter = write_chapter(tmp_path, "tiny", PARAMS, GOOD)
    pipeline.run_chapter(chapter, {"n": 2}, tmp_path / "out",
                         progress={"desc": "[2/5] tiny", "file": buf, "leave": True, "mininterval": 0})
    assert "[2/5] tiny" in buf.getvalue() and "4/4 [" in buf.getvalue()  # 3 cells + the injected one


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
    """built_book starts from an empty cache folder (conftest.fresh_env, created just before
    the run): the model's weights were built into it (not read from another weights cache) and
    the chapters' discovery results landed there (computed, not read back from an earlier run)."""
    from ioi_helpers import weights_cache

    own = built_book / "cache"
    assert list(own.glob("*.pt")), "the chapters wrote nothing to the fresh cache"
    assert {p.name.split("-")[0] for p in own.glob("*.pt")} >= {"path_patch", "attention"}
    entries = list((own / weights_cache.SUBDIR).glob("ioi-planted-seed0-*"))
    assert len(entries) == 1 and (entries[0] / "config.json").is_file(), entries


def test_tests_never_touch_the_users_cache(tmp_path):
    """In the test process and in a pipeline-like subprocess started with fresh_env, the
    discovery cache, the weights cache and the results folder all resolve under pytest's
    temporary folders, never to the user's defaults."""
    from ioi_helpers import results

    default = cache.Path.home() / ".cache" / "ioi-circuit-book"
    assert cache.cache_dir() != default and str(cache.cache_dir()).startswith(str(tmp_path.parent))
    assert str(results.results_dir().resolve()).startswith(str(tmp_path.parent))
    env = fresh_env(tmp_path)
    code = ("from ioi_helpers import cache, results, weights_cache; "
            "print(cache.cache_dir(), weights_cache.weights_dir(), results.results_dir().resolve(), sep='\\n')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    caches, weights, res = proc.stdout.split("\n")[:3]
    assert caches == str(tmp_path / "cache") and weights.startswith(caches + os.sep)
    assert res == str(results.results_dir().resolve()) and res.startswith(str(tmp_path.parent))


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


HANDOVER = ('# %%\nimport os, torch\nfrom ioi_helpers import models\n'
            'slot = models._HANDOVER\ntorch.set_grad_enabled(False)\nmodel = models.load_model(model_name)\n'
            'print("handed" if slot is not None and model is slot["model"] else "built", model.ioi_model_name,\n'
            '      models._HANDOVER is None, sorted(k for k in globals() if k.startswith("_w")),\n'
            '      "here" if slot is None or slot["pid"] == os.getpid() else "elsewhere")\n')


def test_the_warm_kernel_builds_the_chapters_model_and_hands_it_over_once(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV_VAR, "")
    make_book(tmp_path, ["01_a", "02_b"])
    for name in ("01_a", "02_b"):
        write_chapter(tmp_path / "book", name, PARAMS, HANDOVER)
    out = tmp_path / "out"
    base = ["--root", str(tmp_path), "--out", str(out), "--model", "ioi-tiny", "--no-build"]

    def printed(name):
        nb = nbformat.read(out / "executed" / f"{name}.ipynb", as_version=4)
        return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs).split()

    # launched kernels: the first chapter's started cold; the second's built the model while the
    # first ran, and the warm-up left nothing in the chapter's namespace
    assert pipeline.main([*base, "--no-fork-server"]) == 0
    assert printed("01_a") == ["built", "ioi-tiny", "True", "[]", "here"]
    assert printed("02_b") == ["handed", "ioi-tiny", "True", "[]", "here"]
    if forkserver.usable() is None:
        # forked kernels: the fork server built the model once, and each chapter got it (its
        # own copy) without building it again, its warm-up included
        assert pipeline.main(base) == 0
        assert printed("01_a") == ["handed", "ioi-tiny", "True", "[]", "elsewhere"]
        assert printed("02_b") == ["handed", "ioi-tiny", "True", "[]", "elsewhere"]


def test_the_warm_up_builds_a_model_only_for_chapters_that_load_model_name(tmp_path):
    loads = write_chapter(tmp_path, "loads", PARAMS, "# %%\nmodel = models.load_model(model_name)\n")
    other = write_chapter(tmp_path, "other", PARAMS, '# %%\n# models.load_model(model_name)\n'
                          'm = models.load_model("ioi-tiny")\n')
    assert pipeline.warm_up_code(loads, {"model_name": "ioi-planted", "n": 1}) == (
        pipeline.WARM_UP + pipeline.WARM_MODEL.format(model_name="ioi-planted"))
    assert "prepare_handover('ioi-planted')" in pipeline.warm_up_code(loads, {"model_name": "ioi-planted"})
    assert pipeline.warm_up_code(loads, {"n": 1}) == pipeline.WARM_UP  # no model_name parameter
    assert pipeline.warm_up_code(other, {"model_name": "ioi-planted"}) == pipeline.WARM_UP
    assert pipeline.warm_up_code(None, None) == pipeline.WARM_UP
    # every numbered chapter loads its model so (a renamed call would lose the warm model)
    for path in pipeline.chapter_paths(REPO):
        if path.stem[:2].isdigit():
            assert pipeline.WARM_MODEL.format(model_name="m") in pipeline.warm_up_code(path, {"model_name": "m"}), path


def test_a_run_leaves_no_sockets_or_contexts_open(tmp_path, monkeypatch, capfd):
    # papermill leaves the channels of a client it made for a kernel it did not start running
    # (the warm kernels): their sockets and zmq context stayed open, ~12 descriptors a chapter
    monkeypatch.setenv(RESULTS_ENV_VAR, "")
    make_book(tmp_path, ["01_a", "02_b", "03_c"])
    for name in ("01_a", "02_b", "03_c"):
        write_chapter(tmp_path / "book", name, PARAMS, "# %%\nprint(1 + 1)\n")
    argv = ["--root", str(tmp_path), "--out", str(tmp_path / "out"), "--model", "gpt2-random", "--no-build"]

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    for flags in ([], ["--no-fork-server"]):
        assert pipeline.main([*argv, *flags]) == 0  # the first run opens what stays open for good
        before = open_fds()
        assert pipeline.main([*argv, *flags]) == 0
        assert open_fds() - before <= 2, flags  # (measured: 40 more without the fix)
    assert "Exception in thread" not in capfd.readouterr().err


REFERRING = ('# %% [markdown]\n# (first)=\n# # 1. Here\n#\n# See {ref}`left-out`, {ref}`its part <left-out-part>`,'
             ' {doc}`/book/02_left_out` and {ref}`this page <first>`.\n\n' + PARAMS)
REFERRED = '# %% [markdown]\n# (left-out)=\n# # 2. Left out\n#\n# (left-out-part)=\n# ## A part\n\n' + PARAMS


def test_a_subset_builds_when_its_pages_refer_to_pages_left_out(tmp_path):
    make_book(tmp_path, ["01_here", "02_left_out"])
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\nRead {doc}`02_left_out` and {ref}`the first <first>`.\n")
    (tmp_path / "book" / "01_here.py").write_text(REFERRING)
    (tmp_path / "book" / "02_left_out.py").write_text(REFERRED)
    (tmp_path / "book" / "references.bib").write_text("")  # _config.yml's bibliography
    executed = tmp_path / "executed" / "01_here.ipynb"  # as written, not run: only its Markdown matters
    executed.parent.mkdir()
    nbformat.write(pipeline.load_chapter(tmp_path / "book" / "01_here.py"), executed)

    html = pipeline.build_book([executed], tmp_path / "out", root=tmp_path)  # -W: a dangling ref fails it
    here = (html / "book" / "01_here.html").read_text()
    assert "See 2. Left out, its part, 2. Left out and" in here  # plain text: title, own text, page title
    assert "02_left_out.html" not in here and 'href="#first"' in here  # a link to a built page stays
    intro = (html / "book" / "intro.html").read_text()
    assert "Read 2. Left out and" in intro and 'href="01_here.html#first"' in intro
