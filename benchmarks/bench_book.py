"""The whole book, time per chapter and peak memory, on one or more models and at the tests'
search sizes or the chapters' defaults (the authors' sizes).

Run from the repository root:

    python benchmarks/bench_book.py                                  # ioi-planted, then gpt2-planted, tests' sizes
    python benchmarks/bench_book.py --model gpt2-planted --sizes authors
    python benchmarks/bench_book.py --model gpt2-random --chapters 06_backup_name_movers,07_circuit_evaluation --no-build

It runs the real pipeline (``python -m ioi_helpers.pipeline --model MODEL``) in a subprocess per
model, prints each chapter's wall time as the pipeline reports it, and samples the resident
memory of the pipeline and every process under it (the papermill kernels) every 0.2 s with
psutil. ``--sizes tests`` passes the sizes the book tests use (tests/conftest.py
``CI_SEARCH_SIZES``: chapter 7's completeness searches smaller; on gpt2-planted also
``PAPER_LAYOUT_SIZES``: 50 prompts, ACDC on 6); ``--sizes authors`` runs every
chapter at its defaults, the authors' sizes. The discovery cache starts empty (``--warm-cache``
to reuse yours). Reported: the largest RSS of any single process (in practice a chapter's kernel)
and the largest total RSS of the process tree, and a per-chapter table across models. Targets
(the project's): the whole book under 20 minutes on 2 cores, peak memory under 8 GB. Other work
on the machine slows the run down: say what else was running when you quote a number.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 20 * 60
TARGET_BYTES = 8 * 2**30
TIMING = re.compile(r"^(?:\[\d+/\d+\] |\s*)(\S+): ([0-9.]+)s\b")


class TreeMemory:
    """Peak RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        self.root = psutil.Process(pid)
        self.every = every
        self.peak_total = 0
        self.peak_single = 0
        self.peak_single_cmd = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if rss > self.peak_single:
                    self.peak_single = rss
                    try:
                        self.peak_single_cmd = " ".join(p.cmdline()[:3])
                    except psutil.Error:
                        pass
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# the book tests' sizes (tests/conftest.py CI_SEARCH_SIZES, and for gpt2-planted also
# PAPER_LAYOUT_SIZES, as the built_paper_layout_book fixture passes them; read, not imported:
# conftest imports pytest)
def tests_sizes(model: str = "ioi-planted") -> dict:
    import ast

    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    found = {getattr(node.targets[0], "id", ""): ast.literal_eval(node.value) for node in tree.body
             if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in
             ("CI_SEARCH_SIZES", "PAPER_LAYOUT_SIZES")}
    if "CI_SEARCH_SIZES" not in found:
        raise RuntimeError("tests/conftest.py defines no CI_SEARCH_SIZES")
    extra = found.get("PAPER_LAYOUT_SIZES", {}) if model.startswith("gpt2-planted") else {}
    return found["CI_SEARCH_SIZES"] | extra


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ioi-planted,gpt2-planted", help="comma-separated model names")
    parser.add_argument("--sizes", choices=("tests", "authors"), default="tests",
                        help="chapter 7's searches at the tests' sizes or at the chapters' defaults")
    parser.add_argument("--chapters", help="comma-separated chapter stems (default: all in _toc.yml)")
    parser.add_argument("--no-build", action="store_true", help="execute the chapters only")
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="reuse the discovery cache ($IOI_CACHE_DIR); default: an empty one, so "
                             "every path-patching result is computed as on a fresh machine")
    args = parser.parse_args(argv)
    table, ok = {}, True
    for model in args.model.split(","):
        out = (args.out / model) if args.out else None
        times, good = run_one(model, args, out)
        table[model], ok = times, ok and good
    if len(table) > 1:
        names = list(dict.fromkeys(k for t in table.values() for k in t))
        print(f"\nper chapter (s), {args.sizes}' sizes:")
        print(f"  {'chapter':40s}" + "".join(f"{m:>16s}" for m in table))
        for n in names:
            print(f"  {n:40s}" + "".join(f"{t.get(n, float('nan')):16.1f}" for t in table.values()))
    return 0 if ok else 1


def run_one(model: str, args, out: Path | None) -> tuple[dict, bool]:
    out = out or Path(tempfile.mkdtemp(prefix=f"bench-book-{model}-"))
    cmd = [sys.executable, "-m", "ioi_helpers.pipeline", "--model", model, "--out", str(out)]
    if args.sizes == "tests":
        cmd += [a for k, v in tests_sizes(model).items() for a in ("-p", k, str(v))]
    if args.chapters:
        cmd += ["--chapters", args.chapters]
    if args.no_build:
        cmd.append("--no-build")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not args.warm_cache:
        env["IOI_CACHE_DIR"] = str(out / "discovery-cache")
    print(f"$ {' '.join(cmd)}\n  cpus: {os.cpu_count()}, torch threads: default; load average at start: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    times = {}
    with TreeMemory(proc.pid) as mem:
        for line in proc.stdout:
            print(line, end="", flush=True)
            m = TIMING.match(line)  # "[1/9] 01_task: 12.3s" and "book: 40.1s -> ..."
            if m:
                times[m.group(1)] = float(m.group(2))
        rc = proc.wait()
    total = time.perf_counter() - start
    times["total (pipeline wall time)"] = total
    print(f"\n{model}, {args.sizes}' sizes: chapter times (s):")
    for name, secs in times.items():
        print(f"  {name:40s} {secs:8.1f}")
    print(f"  target for the total < {TARGET_SECONDS}")
    print(f"peak RSS, one process: {mem.peak_single / 2**30:.2f} GiB ({mem.peak_single_cmd})")
    print(f"peak RSS, whole process tree: {mem.peak_total / 2**30:.2f} GiB   target < {TARGET_BYTES / 2**30:.0f}")
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ok = rc == 0 and total < TARGET_SECONDS and mem.peak_total < TARGET_BYTES
    print("within targets" if ok else f"NOT within targets (pipeline exit code {rc})")
    return times, ok


if __name__ == "__main__":
    sys.exit(main())
