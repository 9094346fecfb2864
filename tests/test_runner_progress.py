"""Without a terminal (a CI log), the pipeline prints a progress line every few seconds while a
chapter runs: its cells done of its cells, and the time so far.

A fake slow chapter (two cells that sleep) runs with a short ``--progress-every``; the default
is 30 s.
"""

from __future__ import annotations

import re

from ioi_helpers import pipeline
from ioi_helpers.results import RESULTS_ENV_VAR
from test_pipeline import make_book, write_chapter

SLOW = '# %% tags=["parameters"]\nmodel_name = None\n\n# %%\nimport time\ntime.sleep(1.5)\n\n# %%\ntime.sleep(1.5)\n'
LINE = re.compile(r"^\[1/1\] slow: (?:(\d+) of (\d+) cells done|starting its kernel), (\d+)s elapsed$")


def test_a_line_every_interval_while_a_chapter_runs_without_a_terminal(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV_VAR, "")
    monkeypatch.setenv("CI", "true")
    make_book(tmp_path, ["slow"])
    write_chapter(tmp_path / "book", "slow", SLOW)
    argv = ["--root", str(tmp_path), "--out", str(tmp_path / "out"), "--model", "gpt2-random",
            "--no-build", "--no-warm-kernel", "--progress-every", "0.25"]
    assert pipeline.main(argv) == 0
    out = capfd.readouterr().out
    lines = [m for m in map(LINE.match, out.splitlines()) if m]
    counted = [(int(m[1]), int(m[2])) for m in lines if m[1]]
    # 3 s of sleeping at one line a quarter second: about 12 lines (at least 4 on a busy machine)
    assert len(counted) >= 4, out
    assert {total for _, total in counted} == {5}  # the title, the parameters, papermill's, 2 sleeps
    done = [d for d, _ in counted]
    assert done == sorted(done) and any(0 < d < 5 for d in done), out  # seen mid-chapter, never backwards
    assert [int(m[3]) for m in lines] == sorted(int(m[3]) for m in lines)
    assert "\r" not in out
    assert pipeline.parse_args([]).progress_every == 30  # the default: a line at least every 30 s
