"""``python -m ioi_helpers.lab``: JupyterLab in which a double-click on a chapter's ``.py`` opens
it as a notebook (jupytext), with live widgets.

JupyterLab opens ``.py`` files in its text editor by default. This command first writes a
settings override into this environment (``{sys.prefix}/share/jupyter/lab/settings/
overrides.d/ioi-circuit-book.json``: jupytext's "Jupytext Notebook" becomes the default viewer
for Python and Markdown files), then runs ``jupyter lab`` with the given arguments. The
override is a file of its own, so a user's ``overrides.json`` is left alone. Any other
``jupyter lab`` in this environment then behaves the same; right-click, "Open With", "Editor"
still opens the text. As root (a container), ``--allow-root`` is added. ``-h``/``--help``
prints this command's own usage and writes nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"python": "Jupytext Notebook", "markdown": "Jupytext Notebook",
                           "myst": "Jupytext Notebook"}
    }
}


def overrides_file(prefix: str | os.PathLike = sys.prefix) -> Path:
    return Path(prefix, "share", "jupyter", "lab", "settings", "overrides.d", "ioi-circuit-book.json")


def ensure_overrides(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Write the settings override unless it is already there; return its path."""
    path = overrides_file(prefix)
    text = json.dumps(OVERRIDES, indent=2) + "\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


HELP_FLAGS = ("-h", "--help")


def usage() -> str:
    """What this command does, for this book (``--help``)."""
    return f"""usage: python -m ioi_helpers.lab [JUPYTER-LAB-OPTIONS ...]

JupyterLab for the IOI circuit book: double-click a chapter's book/NAME.py and it opens as a
notebook (jupytext), with live widgets; Run All executes it on $IOI_MODEL (default gpt2;
IOI_MODEL=ioi-planted python -m ioi_helpers.lab runs offline). Saving writes the .py back. Right-click, "Open With", "Editor" shows its text.

It first writes a settings override into this environment, so that .py and .md files open as
notebooks in any `jupyter lab` run from it:
  {overrides_file()}
then runs `jupyter lab` with the options given (--allow-root added as root).

JupyterLab's own options (--port, --no-browser, ...): jupyter lab --help"""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_FLAGS for a in args):
        print(usage())  # and nothing written, nothing started
        return
    ensure_overrides()
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in args:
        args.append("--allow-root")  # containers run as root; Jupyter refuses without it
    os.execv(sys.executable, [sys.executable, "-m", "jupyter", "lab", *args])


if __name__ == "__main__":
    main()
