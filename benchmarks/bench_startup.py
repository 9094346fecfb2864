"""A chapter's fixed start-up cost (kernel, imports, model construction) against its total.

Run from the repository root:

    python benchmarks/bench_startup.py --model gpt2-random                  # every chapter
    python benchmarks/bench_startup.py --model ioi-planted --chapters 01_task,02_name_movers
    python benchmarks/bench_startup.py --model gpt2-random --startup-only   # set-up cells only

Each chapter is executed through the pipeline's own :func:`ioi_helpers.pipeline.run_chapter`
(a fresh kernel on this interpreter, papermill), and its executed notebook's timestamps split
the wall time:

* start-up: from papermill's start to the end of the chapter's set-up cell (the first code
  cell after the parameters: imports, ``models.load_model``, ``results.start``), which holds
  the kernel's launch, the imports and the model's construction;
* total: papermill's whole run of the chapter;
* CPU: the kernel's own CPU time (user + system) up to the end of the set-up cell, printed by
  a probe cell inserted after it (less sensitive than wall time to a busy machine). For a
  warm kernel it includes the warm-up: the work is moved off the chapter's path, not removed.

Baseline in the same run: before the chapters, the first chapter's set-up runs once with an
empty weights cache (the constructed weights are built, as every chapter did before the
cache existed), then once more with the cache filled; the ratio is printed. The weights
cache and discovery cache are fresh temporary folders unless ``--warm-cache``.
``--startup-only`` runs each chapter up to its set-up cell, for a quick measurement. The
chapters run as the pipeline runs them: the next chapter's kernel starts and imports while
one runs (``pipeline.WarmKernel``; ``--no-warm-kernel`` for a fresh kernel each time). With
``--startup-only`` there is little to overlap with, so the warm start-ups are an upper bound.
``--device`` sets ``$IOI_DEVICE`` for the kernels (default: CUDA when present).
Target (issue 12): start-up at most 4 s for gpt2-random and ioi-planted on 2 cores. Other
work on the machine slows every number down: say what else was running when you quote one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 4.0


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def setup_index(nb) -> int:
    """Index of the set-up cell: the first code cell after the parameters cell."""
    cells = nb.cells
    params = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    return next(i for i in range(params + 1, len(cells))
                if cells[i].cell_type == "code" and "injected-parameters" not in cells[i].metadata.get("tags", []))


PROBE = ("import resource as _r\n_u = _r.getrusage(_r.RUSAGE_SELF)\n"
         "print(f'startup-cpu {_u.ru_utime + _u.ru_stime:.3f}')")


def instrumented(path: Path, folder: Path, startup_only: bool) -> Path:
    """A copy of a chapter with a cell after its set-up cell that prints the kernel's CPU time
    so far (user + system: less sensitive than wall time to other work on the machine),
    and nothing after it when ``startup_only``."""
    import jupytext
    from nbformat.v4 import new_code_cell

    nb = jupytext.read(path)
    i = setup_index(nb)
    nb.cells = [*nb.cells[: i + 1], new_code_cell(PROBE), *([] if startup_only else nb.cells[i + 1:])]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / path.name
    jupytext.write(nb, out, fmt="py:percent")
    return out


def split(executed: Path) -> tuple[float, float, float, float]:
    """(kernel launch, start-up, start-up CPU, total) seconds from an executed notebook.

    Wall times come from papermill's timestamps: kernel launch is papermill's start to the
    first cell's start; start-up runs to the end of the set-up cell.
    """
    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.papermill
    start, end = _time(meta.start_time), _time(meta.end_time)
    first = next(c for c in nb.cells if c.cell_type == "code").metadata.papermill
    i = setup_index(nb)
    setup = nb.cells[i].metadata.papermill
    printed = "".join(o.get("text", "") for o in nb.cells[i + 1].get("outputs", []))
    cpu = float(printed.split("startup-cpu ")[1].split()[0])
    return ((_time(first.start_time) - start).total_seconds(),
            (_time(setup.end_time) - start).total_seconds(), cpu,
            (end - start).total_seconds())


def run(source: Path, model: str, work: Path, kernel=None) -> tuple[float, float, float, float]:
    from ioi_helpers import pipeline

    params = pipeline.parameters_for([source], {"model_name": model})[source]
    return split(pipeline.run_chapter(source, params, work / "executed", kernel=kernel))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2-random")
    ap.add_argument("--chapters", metavar="A,B,...", help="default: every chapter in _toc.yml")
    ap.add_argument("--startup-only", action="store_true", help="run each chapter only up to its set-up cell")
    ap.add_argument("--warm-cache", action="store_true", help="reuse $IOI_CACHE_DIR (weights, discovery)")
    ap.add_argument("--no-warm-kernel", action="store_true", help="a fresh kernel per chapter")
    ap.add_argument("--device", help="$IOI_DEVICE for the kernels: cpu, cuda, ... (default: CUDA when present)")
    args = ap.parse_args(argv)

    from ioi_helpers import models, pipeline
    from ioi_helpers.results import RESULTS_ENV_VAR

    if args.device:
        os.environ[models.DEVICE_ENV_VAR] = args.device
    models.check_available(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    if not args.warm_cache:
        os.environ["IOI_CACHE_DIR"] = str(work / "cache")
    os.environ[RESULTS_ENV_VAR] = str(work / "results")
    names = [n.strip() for n in args.chapters.split(",")] if args.chapters else None
    chapters = pipeline.chapter_paths(ROOT, names)
    print(f"model {args.model}, device {os.environ.get(models.DEVICE_ENV_VAR) or models.default_device()}, "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)

    # baseline: the set-up cell with the weights built (empty cache) vs read from the cache
    first = instrumented(chapters[0], work / "baseline", startup_only=True)
    _, cold, cold_cpu, _ = run(first, args.model, work)
    _, warm, warm_cpu, _ = run(first, args.model, work)
    print(f"baseline ({chapters[0].stem} start-up, a fresh kernel): weights built {cold:.1f}s "
          f"(CPU {cold_cpu:.1f}s), weights from the cache {warm:.1f}s (CPU {warm_cpu:.1f}s); "
          f"ratio {cold / warm:.1f}x wall, {cold_cpu / warm_cpu:.1f}x CPU", flush=True)

    # as the pipeline runs them: the next chapter's kernel warms up while one runs
    sources = [instrumented(p, work / "chapters", args.startup_only) for p in chapters]
    print(f"{'chapter':36s} {'kernel':>7s} {'start-up':>9s} {'(CPU)':>7s} {'total':>8s} {'share':>6s}"
          f"   ({'no warm kernels' if args.no_warm_kernel else 'the first kernel cold, the others warm'})")
    rows = []
    warm_kernel = None
    for k, (path, source) in enumerate(zip(chapters, sources)):
        kernel, warm_kernel = warm_kernel, None
        if k + 1 < len(sources) and not args.no_warm_kernel:
            warm_kernel = pipeline.WarmKernel(sources[k + 1].parent)
        try:
            launch, startup, cpu, total = run(source, args.model, work, kernel)
        except pipeline.ChapterError as err:
            print(f"{path.stem:36s} FAILED: {str(err).splitlines()[0]}", flush=True)
            continue
        rows.append((startup, cpu))
        print(f"{path.stem:36s} {launch:6.1f}s {startup:8.1f}s {cpu:6.1f}s {total:7.1f}s "
              f"{startup / total:6.0%}", flush=True)
    if warm_kernel is not None:
        warm_kernel.shutdown()
    if rows:
        worst, worst_cpu = max(s for s, _ in rows), max(c for _, c in rows)
        print(f"start-up: worst {worst:.1f}s wall, {worst_cpu:.1f}s CPU; target {TARGET_SECONDS:.0f}s: "
              f"{'met' if worst <= TARGET_SECONDS else 'NOT met'} (load average now "
              f"{os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
