"""``python -m ioi_helpers.lab --help`` explains this command for this book, and writes and starts
nothing (no settings override, no JupyterLab)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ioi_helpers import lab


@pytest.fixture
def recorded(monkeypatch):
    """What main() wrote and ran, instead of writing and running it."""
    calls = []
    monkeypatch.setattr(lab, "ensure_overrides", lambda *a: calls.append("override written"))
    monkeypatch.setattr(lab.os, "execv", lambda path, argv: calls.append(argv[1:]))
    return calls


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--no-browser", "--help"]])
def test_help_prints_the_commands_own_usage_and_does_nothing_else(argv, recorded, capsys):
    lab.main(argv)
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ioi_helpers.lab ")
    assert "IOI circuit book" in out and "book/NAME.py" in out and str(lab.overrides_file()) in out
    assert out.rstrip().endswith("jupyter lab --help")  # where JupyterLab's own help is
    assert recorded == []


def test_without_help_it_writes_the_override_and_runs_jupyter_lab(recorded, monkeypatch):
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    lab.main(["--no-browser"])
    assert recorded == ["override written", ["-m", "jupyter", "lab", "--no-browser"]]


def test_the_command_line_help_is_short_and_is_the_books():
    proc = subprocess.run([sys.executable, "-m", "ioi_helpers.lab", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: python -m ioi_helpers.lab ")
    assert len(proc.stdout.splitlines()) < 20  # not JupyterLab's 175 lines
