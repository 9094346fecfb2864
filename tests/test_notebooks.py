"""The launch buttons open real notebooks: book/NAME.ipynb is committed beside every chapter, in
step with its source, Colab installs the package first, Binder has an environment, and every
Colab/Binder/download URL a built page carries names a file git tracks.
"""

from __future__ import annotations

import builtins
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import nbformat
import pytest
import yaml

from conftest import REPO
import ioi_helpers
from ioi_helpers import notebooks, pipeline

LAUNCH = re.compile(r'href="(https://(?:colab\.research\.google\.com|mybinder\.org)/[^"]+)"')


def tracked(root: Path = REPO) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n"))


def launch_targets(html_dir: Path) -> dict[str, list[str]]:
    """For every built page, the repository paths its Colab and Binder buttons open."""
    repo = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]
    org_repo = urlparse(repo["url"]).path.strip("/")
    branch = repo.get("branch", "main")
    colab = f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/"
    binder = f"https://mybinder.org/v2/gh/{org_repo}/{branch}"
    found: dict[str, list[str]] = {}
    for page in sorted(html_dir.rglob("*.html")):
        for url in LAUNCH.findall(page.read_text()):
            url = url.replace("&amp;", "&")
            if url.startswith(colab):
                path = url.removeprefix(colab)
            elif url.startswith(binder + "?"):
                path = parse_qs(urlparse(url).query)["urlpath"][0].split("/", 2)[2]  # lab/tree/PATH
            else:
                raise AssertionError(f"{page.name}: a launch URL for another repository or branch: {url}")
            found.setdefault(str(page.relative_to(html_dir)), []).append(unquote(path))
    return found


# ----------------------------------------------------------------------------- the notebooks


def test_every_chapter_has_a_notebook_in_step_with_its_source():
    out_of_date = [str(p.relative_to(REPO)) for p in notebooks.stale()]
    assert out_of_date == [], f"run `python -m ioi_helpers.notebooks sync`: {out_of_date}"


def test_check_notices_an_edited_chapter(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("_build", "__pycache__"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root)
    assert notebooks.stale(root) == []
    chapter = root / "book" / "01_task.py"
    chapter.write_text(chapter.read_text().replace("seed = 0", "seed = 1", 1))
    assert notebooks.stale(root) == [chapter]
    (root / "book" / "scorecard.ipynb").unlink()
    assert set(notebooks.stale(root)) == {chapter, root / "book" / "scorecard.py"}
    assert set(notebooks.sync(root)) == {chapter.with_suffix(".ipynb"), root / "book" / "scorecard.ipynb"}
    assert notebooks.stale(root) == [] and notebooks.sync(root) == []


def test_notebooks_have_the_chapters_cells_and_no_outputs():
    for chapter in pipeline.chapter_paths():
        nb = nbformat.read(notebooks.notebook_path(chapter), as_version=4)
        nbformat.validate(nb)
        source = pipeline.load_chapter(chapter)
        cells = [c for c in nb.cells if notebooks.COLAB_TAG not in c.metadata.get("tags", [])]
        assert [(c.cell_type, c.source, c.metadata.get("tags")) for c in cells] == \
               [(c.cell_type, c.source, c.metadata.get("tags")) for c in source.cells], chapter.name
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), chapter.name
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert notebooks.COLAB_TAG in first_code.metadata["tags"], chapter.name
        assert "remove-input" in first_code.metadata["tags"]


def _run_colab_cell(monkeypatch, on_colab: bool, installed: bool) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    # None in sys.modules: `import ioi_helpers` raises ImportError
    monkeypatch.setitem(sys.modules, "ioi_helpers", ioi_helpers if installed else None)
    exec(notebooks.colab_cell().source, {"__builtins__": builtins})
    return calls


def test_the_colab_cell_installs_only_on_colab_and_only_when_missing(monkeypatch):
    assert _run_colab_cell(monkeypatch, on_colab=False, installed=False) == []
    assert _run_colab_cell(monkeypatch, on_colab=True, installed=True) == []
    calls = _run_colab_cell(monkeypatch, on_colab=True, installed=False)
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"] and calls[0][-1] == f"git+{url}"


def test_binder_installs_the_lock_and_the_package():
    lines = [l.split("#")[0].strip() for l in (REPO / "binder" / "requirements.txt").read_text().splitlines()]
    assert "-r ../requirements.txt" in lines
    assert any(l.startswith("--extra-index-url https://download.pytorch.org/whl/cpu") for l in lines)
    lock = [l.split("#")[0].strip() for l in (REPO / "requirements.txt").read_text().splitlines()]
    assert "-e ." in lock  # the package itself, from the repository's files
    assert re.fullmatch(r"python-3\.1[1-9]\s*", (REPO / "binder" / "runtime.txt").read_text())


# ----------------------------------------------------------------------------- the built pages


def check_launch_urls(html_dir: Path) -> None:
    targets = launch_targets(html_dir)
    chapters = {f"book/{p.stem}.html" for p in pipeline.chapter_paths()}
    assert chapters <= set(targets), f"pages without launch buttons: {sorted(chapters - set(targets))}"
    files = tracked()
    untracked = sorted({(page, path) for page, paths in targets.items() for path in paths
                        if path not in files})
    assert untracked == [], f"launch URLs that open no tracked file: {untracked}"
    for page, paths in targets.items():
        assert set(paths) == {page.replace(".html", ".ipynb")}, (page, paths)


def test_every_launch_url_opens_a_tracked_notebook(unexecuted_book):
    check_launch_urls(unexecuted_book)


@pytest.mark.book
def test_every_launch_url_of_the_built_book_opens_a_tracked_notebook(built_book):
    check_launch_urls(built_book / "html")
