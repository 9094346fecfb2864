"""The chapters as ``.ipynb`` notebooks, for the book's Colab and Binder buttons.

    python -m ioi_helpers.notebooks sync     # write book/NAME.ipynb for every book/NAME.py chapter
    python -m ioi_helpers.notebooks check    # exit 1 naming every notebook missing or out of date

The jupytext ``.py`` files in ``book/`` are the chapters' source; the pipeline executes them. The
launch buttons of a built page open ``book/NAME.ipynb`` of the repository (Jupyter Book builds
that URL from ``repository`` and ``path_to_book`` in ``_config.yml``), so each chapter has a
notebook committed beside its source, without outputs. It is generated, never edited by hand:
the chapter's cells, deterministic cell ids, and in front one cell that installs this package
when the notebook runs in Colab (anywhere else the cell does nothing; Binder installs from
``binder/requirements.txt``). After editing a chapter, run ``sync``; a test fails while a
notebook is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import nbformat
import yaml

from .pipeline import ROOT, chapter_paths, load_chapter

COLAB_TAG = "colab-install"

COLAB_CELL = '''\
# In Colab, install the book's helper package first (anywhere else this cell does nothing).
import sys

if "google.colab" in sys.modules:
    try:
        import ioi_helpers  # noqa: F401
    except ImportError:
        import subprocess

        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "git+{url}"])'''


def repository_url(root: Path = ROOT) -> str:
    """The repository the launch buttons point at (``repository.url`` in ``_config.yml``)."""
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def colab_cell(root: Path = ROOT) -> nbformat.NotebookNode:
    """The first cell of every notebook: ``pip install git+<repository>`` on Colab only."""
    return nbformat.v4.new_code_cell(COLAB_CELL.format(url=repository_url(root)),
                                     metadata={"tags": ["remove-input", COLAB_TAG]})


def notebook_for(chapter: Path, root: Path = ROOT) -> str:
    """The ``.ipynb`` text for a jupytext chapter: its cells without outputs, the Colab cell first.

    Deterministic: the same chapter always gives the same text (cell ids are their index).
    """
    nb = load_chapter(chapter)
    nb.metadata.pop("jupytext", None)  # describes the .py file, not this one
    nb.cells.insert(0 if nb.cells[0].cell_type == "code" else 1, colab_cell(root))
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def notebook_path(chapter: Path) -> Path:
    return chapter.with_suffix(".ipynb")


def sync(root: Path = ROOT) -> list[Path]:
    """Write every chapter's notebook that is missing or out of date; the paths written."""
    written = []
    for chapter in chapter_paths(root):
        text, dest = notebook_for(chapter, root), notebook_path(chapter)
        if not dest.exists() or dest.read_text() != text:
            dest.write_text(text)
            written.append(dest)
    return written


def stale(root: Path = ROOT) -> list[Path]:
    """The chapters whose committed notebook is missing or differs from what ``sync`` writes."""
    return [c for c in chapter_paths(root)
            if not notebook_path(c).exists() or notebook_path(c).read_text() != notebook_for(c, root)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ioi_helpers.notebooks",
                                     description="Keep book/NAME.ipynb in step with book/NAME.py.")
    parser.add_argument("command", choices=["sync", "check"])
    args = parser.parse_args(argv)
    if args.command == "sync":
        for path in sync():
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    out_of_date = stale()
    for chapter in out_of_date:
        print(f"{notebook_path(chapter).relative_to(ROOT)} is missing or out of date with "
              f"{chapter.relative_to(ROOT)}", file=sys.stderr)
    if out_of_date:
        print("run: python -m ioi_helpers.notebooks sync", file=sys.stderr)
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main())
