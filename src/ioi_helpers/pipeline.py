"""Execute the book's chapters and build the book.

    python -m ioi_helpers.pipeline                      # every chapter in _toc.yml, then the book
    python -m ioi_helpers.pipeline --model ioi-tiny --chapters 01_task --no-build
    python -m ioi_helpers.pipeline --model ioi-tiny --chapters 01_task -p n_prompts 50

Chapters are jupytext percent-format ``.py`` files listed in ``_toc.yml``, each with a cell
tagged ``parameters``. For each one the pipeline converts it to a notebook, runs it with
papermill in a kernel on this very interpreter, injects ``model_name`` (``--model``, else
``$IOI_MODEL``, else ``"gpt2"``) and any ``-p KEY VALUE`` into the chapters whose parameters
cell assigns that name, and writes ``OUT/executed/NAME.ipynb``
atomically: a stale copy is deleted first and the new one appears only once every cell ran.
Chapters record their numbers in ``OUT/results`` (``$IOI_RESULTS_DIR``).

Before any chapter runs, the pipeline checks what it can: a ``-p`` key that no chapter's
parameters cell assigns is an error naming the real ones, a value its parameter does not allow
is an error saying what it allows (:func:`parameter_rules`), and the model is checked once
(:func:`models.check_available`, no weights built). A failing cell is named by the line that
raised. In a terminal a progress bar shows chapter k of n and its cells; without a TTY, or
with ``CI=true``, the log holds a line every 30 s while a chapter runs (its cells done of its
cells, and the time so far; ``--progress-every``) and one line per chapter when it is done.
While a chapter runs, the next one's kernel starts, imports what chapters import and builds
the chapter's model (:class:`WarmKernel`), so most of its fixed start-up is done by the time
it runs (``--no-warm-kernel`` turns this off).
On the CPU on Linux those kernels are forked from one process that did the imports and built
the model once (:mod:`ioi_helpers.forkserver`; ``--no-fork-server`` launches them instead), so
a chapter's start-up costs well under a second of CPU instead of 13-15 s on 2 idle cores
(:class:`Kernels`).

The book is then built with Jupyter Book from a staged source tree ``OUT/site`` (config, a toc
holding only the chapters just run, pages, ``book/_static``, the executed notebooks with their
charts turned into offline HTML, and a Vega bundle) into ``OUT/html``, with warnings as errors.
``OUT`` is ``_build`` in the repository unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .startup import WARM_MODEL, WARM_UP, defer_iri_grammar, loads_model, warm_up_code  # noqa: F401

defer_iri_grammar()  # nbformat's validator imports jsonschema: 2.3 s for a parser it seldom uses

import nbformat  # noqa: E402
import yaml  # noqa: E402

from .hooks import PROGRESS_ENV_VAR  # noqa: E402
from .results import RESULTS_ENV_VAR  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # the repository (the package is installed editable)
KERNEL = "ioi-book"
TOC_LISTS = ("parts", "chapters", "sections")
PAGE_SUFFIXES = (".md", ".ipynb")
VEGALITE_MIME = re.compile(r"application/vnd\.vegalite\.v\d+[.+]json")
CELL_MARKER = re.compile(r"#\s*%%")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ChapterError(RuntimeError):
    """A chapter that could not be executed; the message names the chapter, cell and line."""

    trace: str = ""  # the kernel's traceback, shown with --traceback


class BuildError(RuntimeError):
    """Jupyter Book failed or warned."""


# ----------------------------------------------------------------------------- the toc


def read_toc(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "_toc.yml").read_text())


def toc_files(toc: dict) -> list[str]:
    """Every ``file`` of a jb-book toc in reading order, the root first."""
    files = [toc["root"]]

    def walk(node: dict) -> None:
        for key in TOC_LISTS:
            for item in node.get(key) or []:
                if "file" in item:
                    files.append(item["file"])
                walk(item)

    walk(toc)
    return files


def book_sources(root: Path = ROOT, toc: dict | None = None) -> dict[str, Path]:
    """The source of every toc entry: a ``.py`` chapter, else a ``.md``/``.ipynb`` page.

    Raises ``FileNotFoundError`` naming every entry that has no source yet.
    """
    toc = read_toc(root) if toc is None else toc
    sources: dict[str, Path] = {}
    missing = []
    for entry in toc_files(toc):
        base = root / entry
        found = [p for p in (base.with_suffix(".py"), *map(base.with_suffix, PAGE_SUFFIXES)) if p.exists()]
        if found:
            sources[entry] = found[0]
        else:
            missing.append(entry)
    if missing:
        raise FileNotFoundError(
            f"_toc.yml lists {', '.join(missing)} but there is no .py, .md or .ipynb source for "
            f"{'it' if len(missing) == 1 else 'them'} under {root}: write the chapter or remove "
            f"the entry from _toc.yml")
    return sources


def chapter_paths(root: Path = ROOT, names: Iterable[str] | None = None) -> list[Path]:
    """The ``.py`` chapters of the toc in order, or those named (by stem, e.g. ``01_task``)."""
    chapters = [p for p in book_sources(root).values() if p.suffix == ".py"]
    if names is None:
        return chapters
    by_name = {p.stem: p for p in chapters}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; the chapters in _toc.yml are "
                         f"{', '.join(by_name) or 'none'}")
    return [by_name[n] for n in names]


def _prune(node: dict, drop: set[str]) -> dict:
    """A copy of a toc node without the entries in ``drop`` (and parts left empty)."""
    out = {k: v for k, v in node.items() if k not in TOC_LISTS}
    for key in TOC_LISTS:
        items = [_prune(i, drop) for i in node.get(key) or [] if i.get("file") not in drop]
        items = [i for i in items if "file" in i or "url" in i or any(k in i for k in TOC_LISTS)]
        if items:
            out[key] = items
    return out


# ----------------------------------------------------------------------------- one chapter


def ensure_kernel() -> str:
    """The name of a kernelspec that runs this very interpreter, written if needed.

    It lives in ``sys.prefix`` (the venv), so a fresh machine needs no ``jupyter kernelspec``
    step and papermill never picks another Python. The kernel logs only errors (not ipykernel's
    notice about unencrypted local TCP, which papermill would print once per chapter).
    """
    from ipykernel.kernelspec import make_ipkernel_cmd
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    argv = make_ipkernel_cmd(executable=sys.executable, extra_arguments=["--IPKernelApp.log_level=CRITICAL"])

    def installed() -> list[str] | None:
        try:
            return KernelSpecManager().get_kernel_spec(KERNEL).argv
        except NoSuchKernel:
            return None

    if installed() != argv:
        spec = {"argv": argv, "display_name": f"Python (IOI book, {sys.prefix})", "language": "python"}
        spec_dir = Path(sys.prefix, "share", "jupyter", "kernels", KERNEL)
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
        if installed() != argv:
            raise RuntimeError(f"another kernelspec named {KERNEL!r} shadows the one written to "
                               f"{spec_dir}; remove it (jupyter kernelspec remove {KERNEL})")
    return KERNEL


def load_chapter(path: Path) -> nbformat.NotebookNode:
    """A jupytext chapter as a notebook; it must have a cell tagged ``parameters``.

    The notebook names the portable ``python3`` kernel (for readers who download it); the
    pipeline itself runs it on :func:`ensure_kernel`'s.
    """
    import jupytext

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ChapterError(f"chapter {path.stem} ({path}) has no cell tagged 'parameters': "
                           f"start its parameters cell with `# %% tags=[\"parameters\"]`")
    return nb


NOT_A_LITERAL = Ellipsis  # the default of a parameter assigned an expression: its type is unknown


def _parameter_assignments(path: Path) -> dict[str, tuple[str, Any]]:
    """Each name a chapter's ``parameters`` cell assigns: its line and its default value (the
    assigned literal; :data:`NOT_A_LITERAL` when the value is an expression)."""
    nb = load_chapter(path)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    found: dict[str, tuple[str, Any]] = {}
    for node in ast.parse(cell.source).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        try:
            default = ast.literal_eval(node.value) if getattr(node, "value", None) else NOT_A_LITERAL
        except (ValueError, TypeError, SyntaxError):
            default = NOT_A_LITERAL
        for target in targets:
            single = isinstance(target, ast.Name)  # `a, b = 1, 2`: no default of its own
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    found.setdefault(name.id, (lines[node.lineno - 1].strip(),
                                               default if single else NOT_A_LITERAL))
    return found


def chapter_parameters(path: Path) -> dict[str, str]:
    """The names a chapter's ``parameters`` cell assigns, each with its line (value, comment)."""
    return {name: line for name, (line, _) in _parameter_assignments(path).items()}


def chapter_defaults(path: Path) -> dict[str, Any]:
    """The names a chapter's ``parameters`` cell assigns, each with its default value."""
    return {name: default for name, (_, default) in _parameter_assignments(path).items()}


def parameters_for(chapters: Sequence[Path], params: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """Each chapter's share of ``params``: the keys its parameters cell assigns.

    A key that no chapter assigns (a typo such as ``n_promts``) raises ``ValueError`` naming
    the closest real parameter and every chapter's parameters, and so does a value its
    parameter does not allow (:func:`check_values`), before anything runs.
    """
    import difflib

    assigned = {path: _parameter_assignments(path) for path in chapters}
    declared = {path: {n: line for n, (line, _) in names.items()} for path, names in assigned.items()}
    known = sorted({name for names in declared.values() for name in names})
    unknown = [key for key in params if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        listing = "\n".join(f"  {path.stem}: {', '.join(names) or '(none)'}"
                            for path, names in declared.items())
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}: "
                         f"no chapter run here has {'them' if len(unknown) > 1 else 'it'}. "
                         f"The chapters' parameters:\n{listing}")
    defaults: dict[str, list] = {}
    for names in assigned.values():
        for name, (_, default) in names.items():
            defaults.setdefault(name, []).append(default)
    check_values(params, defaults)
    return {path: {k: v for k, v in params.items() if k in names} for path, names in declared.items()}


# ----------------------------------------------------------------------------- parameter values
# What a -p value may be. A rule names parameters by pattern (the first rule that matches
# decides), says in words what they allow and checks a value. A parameter no rule names must
# have its chapters' default's type. None is allowed wherever a chapter's default is None (the
# chapter then picks its own value). tests/test_runner_parameters.py checks that every
# chapter's defaults obey these rules and that every parameter is covered by one or the other.


def _integer(least: int):
    return lambda v: type(v) is int and v >= least


def _number(low: float, high: float, low_included: bool):
    return lambda v: (type(v) in (int, float) and (low <= v if low_included else low < v) and v <= high)


def _one_of(choices: Sequence[str]):
    return lambda v: isinstance(v, str) and v in choices


def _list_of(check):
    return lambda v: isinstance(v, list) and len(v) > 0 and all(map(check, v))


def _words(choices: Sequence[str]) -> str:
    return ", ".join(f"'{c}'" for c in choices)


def parameter_rules() -> list[tuple[tuple[str, ...], str, Any]]:
    """``(patterns, what is allowed, check)`` for every kind of chapter parameter."""
    from typing import get_args

    from .ablation import Method
    from .dataset import POSITIONS, TEMPLATE_SETS

    return [
        (("model_name", "results_dir"), "a string", lambda v: isinstance(v, str)),
        (("seed", "*_seed"), "an integer >= 0", _integer(0)),
        # chapter 9's edge-level prompts: two disjoint halves and a bootstrap need two
        (("edge_n_prompts", "control_n_prompts"), "an integer >= 2", _integer(2)),
        # counts: prompts, sequences, sets, steps, candidates, top-k, lengths, factors
        (("n_*", "*_n_*", "*_sets", "*_steps", "*_candidates", "*_k", "*_len", "*_factor"),
         "a positive integer", _integer(1)),
        # fractions of the clean logit difference (a head's effect, ACDC's tau) and scores (an
        # attention probability): 0 would keep every head, above 1 none
        (("*_threshold", "*_tau", "*_tau_min", "*_score"), "a number > 0 and <= 1", _number(0, 1, False)),
        (("*_margin",), "a number >= 0 and <= 1", _number(0, 1, True)),
        (("prepend_bos",), "True or False", lambda v: type(v) is bool),
        (("template_set",), f"one of {_words(TEMPLATE_SETS)}", _one_of(TEMPLATE_SETS)),
        (("ablation_method",), f"one of {_words(get_args(Method))}", _one_of(get_args(Method))),
        (("abc_per_group",), "a non-empty list of positive integers", _list_of(_integer(1))),
        (("acdc_positions",), f"a non-empty list of positions from {_words(POSITIONS)}",
         _list_of(_one_of(POSITIONS))),
    ]


TYPE_OF_DEFAULT = [  # for a parameter no rule names: what its default's type allows
    (bool, "True or False", lambda v: type(v) is bool),
    (int, "an integer", lambda v: type(v) is int),
    (float, "a number", lambda v: type(v) in (int, float)),
    (str, "a string", lambda v: isinstance(v, str)),
    (list, "a list", lambda v: isinstance(v, list)),
]


def parameter_rule(name: str, defaults: Sequence[Any],
                   rules: Sequence | None = None) -> tuple[str, Any] | None:
    """What ``name`` allows, in words, and the check: its rule, else its default's type (None
    when neither says). ``defaults``: its default in each chapter that has it."""
    import fnmatch

    rules = parameter_rules() if rules is None else rules
    for patterns, allowed, check in rules:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return allowed, check
    typed = next((d for d in defaults if d is not None and d is not NOT_A_LITERAL), None)
    return next(((allowed, check) for kind, allowed, check in TYPE_OF_DEFAULT
                 if type(typed) is kind), None)


def check_values(params: dict[str, Any], defaults: dict[str, Sequence[Any]]) -> None:
    """Raise ``ValueError``, in one line, for every value in ``params`` that its parameter does
    not allow (:func:`parameter_rules`); ``defaults``: each parameter's default in each chapter."""
    rules = parameter_rules()
    problems = []
    for key, value in params.items():
        found = parameter_rule(key, defaults.get(key, []), rules)
        if found is None:
            continue
        allowed, check = found
        none_ok = None in defaults.get(key, [])
        if (value is None and none_ok) or check(value):
            continue
        shown = value if isinstance(value, str) else repr(value)
        default = next((d for d in defaults.get(key, []) if d is not NOT_A_LITERAL), NOT_A_LITERAL)
        problems.append(f"-p {key} {shown}: {key} must be {allowed}"
                        + (" or None" if none_ok else "")
                        + ("" if default is NOT_A_LITERAL else f" (default: {default!r})"))
    if problems:
        raise ValueError("; ".join(problems))


def _cell_line(path: Path, index: int, n_cells: int) -> int | None:
    """The line of ``path`` where cell ``index`` starts, when every cell has a ``# %%`` marker."""
    lines = [i for i, line in enumerate(path.read_text().splitlines(), 1) if CELL_MARKER.match(line)]
    return lines[index] if len(lines) == n_cells else None


CELL_FRAME = re.compile(r"^Cell In\[\d+\], line (\d+)", re.MULTILINE)
FILE_FRAME = re.compile(r"^File (\S+?):(\d+), in (\S+?)\(", re.MULTILINE)


def _failure(path: Path, nb: nbformat.NotebookNode, err: Any, injected: bool) -> tuple[str, str]:
    """The message for a papermill error and the kernel's traceback (ANSI codes removed).

    The message names the chapter, the cell and the line that raised (the failing cell's own
    frame: the first ``Cell In[..], line L`` of IPython's traceback), with its line in the
    ``.py`` file, the exception, and the innermost library frame when it was raised there.
    """
    trace = ANSI.sub("", "\n".join(err.traceback or []))
    injected_at = 1 + next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    if injected and err.cell_index == injected_at:
        return f"chapter {path.stem} failed in the injected parameters cell\n{err.ename}: {err.evalue}", trace
    index = err.cell_index - (injected and err.cell_index > injected_at)  # in the chapter
    source = nb.cells[index].source.splitlines()
    where = f"cell {index + 1}"
    frame = CELL_FRAME.search(trace)
    start = _cell_line(path, index, len(nb.cells))
    if frame and 1 <= int(frame.group(1)) <= len(source):
        in_cell = int(frame.group(1))
        text = source[in_cell - 1].strip()
        file_lines = path.read_text().splitlines()
        if start and start + in_cell <= len(file_lines) and file_lines[start + in_cell - 1].strip() == text:
            where += f", line {start + in_cell}: `{text}`"
        else:
            where += f" (its line {in_cell}): `{text}`"
    else:
        first = next((s for s in source if s.strip()), "").strip()
        where += (f" (line {start})" if start else "") + f": `{first}`"
    message = f"chapter {path.stem} failed at {where}\n{err.ename}: {err.evalue}"
    frames = FILE_FRAME.findall(trace)
    if frames:
        file, line, func = frames[-1]
        try:
            file = str(Path(file).resolve().relative_to(ROOT))
        except ValueError:
            pass
        message += f"\n  raised in {func} ({file}:{line})"
    return message, trace


class WarmKernel:
    """A kernel started for a chapter ahead of time, importing what chapters import.

    The pipeline starts the next chapter's kernel before running the current chapter, so
    the kernel's launch, the imports and the model's construction (most of a chapter's fixed
    start-up) overlap with the current chapter's work. The warm-up runs silently (no output,
    no history, nothing left in the chapter's namespace: only ``sys.modules``, the tokenizer
    cache and the model parked in ``models``' hand-over slot are warm). ``path`` and
    ``params``: the chapter and its parameters, so the warm-up can build its model
    (:func:`warm_up_code`); without them only the imports are warmed. ``server``: a
    :class:`forkserver.ForkServer` to fork the kernel from (imports and model already done
    there) instead of launching it.
    """

    def __init__(self, cwd: Path, path: Path | None = None, params: dict[str, Any] | None = None,
                 server=None):
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        code = warm_up_code(path, params)  # before the kernel starts: a bad path starts nothing
        os.environ[PROGRESS_ENV_VAR] = "1"  # inherited by the kernel, as in run_chapter
        if server is not None:  # forked from the fork server: the warm-up finds it all done
            from .forkserver import kernel_manager

            self.km = kernel_manager(server, ensure_kernel())
        else:
            self.km = AsyncKernelManager(kernel_name=ensure_kernel())
        run_sync(self.km.start_kernel)(cwd=str(cwd))
        self.cwd = Path(cwd)
        self._clients: list = []  # made by papermill from self.km (see handover)
        self._client = self.km.blocking_client()
        self._client.start_channels(hb=False)  # no heartbeat thread: nothing here waits on it
        self._client.execute(code, silent=True, store_history=False)

    def handover(self):
        """The kernel manager, for papermill (its own client queues behind the warm-up).

        papermill leaves the channels of the client it makes running when it did not start the
        kernel itself, so their sockets and zmq context would stay open (about 12 descriptors
        per chapter): the manager records the clients it makes, and :meth:`shutdown` closes them.
        """
        self._client.stop_channels()
        make_client = self.km.client

        def client(**kwargs):
            made = make_client(**kwargs)
            self._clients.append(made)
            return made

        self.km.client = client
        return self.km

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        try:
            self._client.stop_channels()
            if run_sync(self.km.is_alive)():
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - a kernel that is already gone is fine
            pass
        for client in (self._client, *self._clients):
            try:
                if client.channels_running:
                    client.stop_channels()
                if client._created_context and not client.context.closed:
                    client.context.destroy(linger=0)
            except Exception:  # noqa: BLE001 - closing what is left: nothing to report
                pass
        self._clients = []


class Kernels:
    """The kernels of a run's chapters, each started one chapter ahead (:class:`WarmKernel`).

    ``fork``: fork them all from one :class:`forkserver.ForkServer` that imports what chapters
    import and builds the run's model once, where it can (:func:`forkserver.usable`); then
    even the first chapter's kernel is warm. Else the first chapter gets papermill's own
    kernel (``None``) and each later one a kernel launched while the one before it runs.
    ``warm=False``: papermill's own kernel for every chapter. A kernel that fails to start is
    ``None`` too (papermill then starts one itself). If the fork server fails, a one-line
    warning says so and kernels are launched the usual way from then on. The fork server
    starts at once and warms up in the background; the first chapter's kernel is forked when
    that chapter is taken, so the wait for the warm-up counts in the first chapter's time.
    """

    def __init__(self, chapters: Sequence[Path], per_chapter: dict[Path, dict[str, Any]],
                 warm: bool = True, fork: bool = True):
        self.chapters, self.per_chapter, self.warm = list(chapters), per_chapter, warm
        self.server = None
        self.why_not_forked = "warm kernels are off" if not warm else "off" if not fork else None
        if warm and fork:
            from . import forkserver

            self.why_not_forked = forkserver.usable()
            if self.why_not_forked is None:
                first = next((p for p in self.chapters if loads_model(p, per_chapter[p])), None)
                try:
                    self.server = forkserver.ForkServer(None if first is None else per_chapter[first]["model_name"])
                except OSError as err:  # could not start it: launch the kernels instead
                    self.why_not_forked = f"the fork server did not start ({err})"
        self._next: tuple[int, WarmKernel | None] | None = None  # (chapter index, its kernel)

    def _start(self, k: int) -> WarmKernel | None:
        path = self.chapters[k]
        try:
            return WarmKernel(path.parent, path, self.per_chapter[path], server=self.server)
        except Exception as err:  # noqa: BLE001 - then papermill starts that kernel itself
            if self.server is None:
                return None
            print(f"warning: the fork server failed ({type(err).__name__}: {err}); kernels "
                  f"start the usual way from here on", file=sys.stderr, flush=True)
            self.server.close()
            self.server = None
            self.why_not_forked = "the fork server failed"
            return self._start(k)

    def take(self, k: int) -> WarmKernel | None:
        """The kernel for chapter ``k`` (0-based; chapters are taken in order), after starting
        chapter ``k + 1``'s."""
        kernel = None
        if k == 0 and self.server is not None:
            self._next = (0, self._start(0))
        if self._next is not None:
            ahead, kernel = self._next
            self._next = None
            if ahead != k and kernel is not None:  # not taken in order: not this chapter's
                kernel.shutdown()
                kernel = None
        if self.warm and k + 1 < len(self.chapters):
            self._next = (k + 1, self._start(k + 1))
        return kernel

    def describe(self) -> str:
        if self.server is not None:
            built = f" and built {self.server.model_name}" if self.server.model_name else ""
            return f"forked from one process that imported what chapters import{built}"
        if not self.warm:
            return "a fresh kernel per chapter"
        return f"each kernel started one chapter ahead (not forked: {self.why_not_forked})"

    def close(self) -> None:
        if self._next is not None and self._next[1] is not None:
            self._next[1].shutdown()
        self._next = None
        if self.server is not None:
            self.server.close()
            self.server = None


PROGRESS_EVERY = 30.0  # seconds between two progress lines without a terminal (--progress-every)
ENGINE = "ioi-book"  # papermill's nbclient engine, also telling a ProgressLines its cells


class ProgressLines:
    """Without a terminal (a CI log): one line every ``every`` seconds while a chapter runs,
    ``LABEL: D of N cells done, Ts elapsed`` (elapsed since this object was made).

    A background thread prints them while the ``with`` block runs. The cells are counted from
    papermill's execution manager, which the pipeline's engine hands to :meth:`watch`; until
    then (the kernel is starting) the line says so.
    """

    def __init__(self, label: str, every: float = PROGRESS_EVERY, stream=None):
        self.label, self.every = label, every
        self.stream = sys.stdout if stream is None else stream
        self.start = time.perf_counter()
        self._manager = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, manager) -> None:
        """Count the cells of ``manager`` (papermill's ``NotebookExecutionManager``)."""
        self._manager = manager

    def line(self) -> str:
        elapsed = f"{time.perf_counter() - self.start:.0f}s elapsed"
        if self._manager is None:
            return f"{self.label}: starting its kernel, {elapsed}"
        cells = list(self._manager.nb.cells)
        done = sum(c.metadata.get("papermill", {}).get("status") == "completed" for c in cells)
        return f"{self.label}: {done} of {len(cells)} cells done, {elapsed}"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> "ProgressLines":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="progress-lines", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@functools.lru_cache(maxsize=None)
def _register_engine() -> str:
    """Register :data:`ENGINE` with papermill (once) and return its name: papermill's own
    nbclient engine, which also hands its execution manager to a ``progress_lines`` argument."""
    from papermill.engines import NBClientEngine, papermill_engines

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, progress_lines=None, **kwargs):
            if progress_lines is not None:
                progress_lines.watch(nb_man)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, Engine)
    return ENGINE


def run_chapter(path: Path, params: dict[str, Any], out_dir: Path,
                progress: bool | dict = False, kernel: WarmKernel | None = None,
                lines: ProgressLines | None = None) -> Path:
    """Execute one chapter with ``params`` injected; return ``out_dir/NAME.ipynb``.

    Any earlier ``NAME.ipynb`` is deleted first; the new one is written to a temporary file and
    renamed only once every cell ran. A failing cell raises :class:`ChapterError` (its
    ``trace`` holds the kernel's traceback). ``progress``: papermill's per-cell progress bar
    (``True`` or tqdm options), for a terminal. ``kernel``: a :class:`WarmKernel` started in
    the chapter's folder, used and then shut down (else papermill starts a fresh one).
    ``lines``: a :class:`ProgressLines` (printing while the caller's ``with`` block runs) that
    counts this chapter's cells, for a log without a terminal.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path, out_dir = Path(path).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{path.stem}.ipynb"
    final.unlink(missing_ok=True)
    nb = load_chapter(path)
    kernel_name = ensure_kernel()
    # the kernel inherits this: progress bars would leave widget junk in the executed book
    os.environ[PROGRESS_ENV_VAR] = "1"
    extra = {}
    if kernel is not None:
        if kernel.cwd.resolve() != path.parent:
            kernel.shutdown()
            raise ValueError(f"the warm kernel runs in {kernel.cwd}, not in {path.parent}")
        extra["km"] = kernel.handover()
    try:
        executed = papermill.execute_notebook(
            copy.deepcopy(nb), None, parameters=dict(params), kernel_name=kernel_name,
            cwd=str(path.parent), progress_bar=progress, log_output=False,
            engine_name=_register_engine(), progress_lines=lines,
            # a warm kernel answers papermill only once its warm-up imports are done
            start_timeout=600 if kernel is not None else 60, **extra)
    except PapermillExecutionError as err:
        message, trace = _failure(path, nb, err, injected=bool(params))
        error = ChapterError(message)
        error.trace = trace
        raise error from None
    except Exception as err:  # the kernel died, could not start, ...
        text = str(err) if len(str(err)) < 2000 else str(err)[:2000] + " [...]"
        raise ChapterError(f"chapter {path.stem} failed: {type(err).__name__}: {text}") from err
    finally:
        if kernel is not None:
            kernel.shutdown()  # papermill leaves a kernel it did not start running
    executed.metadata.papermill.update(input_path=str(path), output_path=str(final))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".ipynb.part", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(executed, f)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


# ----------------------------------------------------------------------------- the book


def offline_charts(nb: nbformat.NotebookNode) -> None:
    """Turn every Vega-Lite output into the book's offline HTML (:func:`plots.chart_html`).

    The spec moves into the HTML; the Vega-Lite entry itself is dropped, since myst-nb warns
    about a mimetype it cannot render.
    """
    from .plots import chart_html

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for key in [k for k in data if VEGALITE_MIME.fullmatch(k)]:
                data["text/html"] = chart_html(data.pop(key))


ROLE = re.compile(r"\{(ref|numref|doc)\}`([^`]*)`")  # a MyST cross-reference: {ref}`label`
EXPLICIT = re.compile(r"(.*?)\s*<([^<>]+)>", re.DOTALL)  # {ref}`its text <label>`
LABEL_LINE = re.compile(r"\(([^()\s]+)\)=")  # (label)= on a line of its own
HEADING = re.compile(r"#{1,6}\s+(.+?)\s*")
FENCE = re.compile(r"(```|~~~)")


def page_markdown(path: Path) -> list[str]:
    """The Markdown of a page's source: a ``.md`` file, or the Markdown cells of a ``.py``
    chapter or a notebook."""
    if path.suffix == ".md":
        return [path.read_text()]
    if path.suffix == ".py":
        import jupytext

        nb = jupytext.read(path)
    else:
        nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def page_targets(path: Path) -> tuple[str | None, dict[str, str]]:
    """What a page defines for cross-references: its title (the first heading) and its labels
    (``(label)=``), each with the text it stands for (the heading it labels, else itself)."""
    title, labels = None, {}
    for text in page_markdown(path):
        pending, fenced = [], False
        for line in text.splitlines():
            line = line.strip()
            if FENCE.match(line):
                fenced = not fenced
            if fenced or not line:
                continue
            if label := LABEL_LINE.fullmatch(line):
                pending.append(label[1])
                continue
            heading = HEADING.fullmatch(line)
            title = title or (heading[1] if heading else None)
            labels.update((label, heading[1] if heading else label) for label in pending)
            pending = []
        labels.update((label, label) for label in pending)
    return title, labels


def unbuilt_targets(sources: dict[str, Path], built: set[str]) -> dict[tuple[str, str], str]:
    """The cross-reference targets that only pages not in ``built`` define, each with the plain
    text that stands in for a reference to it: ``("ref", label)`` and ``("doc", entry)``."""
    gone: dict[tuple[str, str], str] = {}
    for entry, source in sources.items():
        if entry not in built:
            title, labels = page_targets(source)
            gone[("doc", entry)] = title or entry
            gone.update((("ref", label), text) for label, text in labels.items())
    return gone


def unlink_references(text: str, entry: str, gone: dict[tuple[str, str], str]) -> str:
    """``text`` (Markdown of the page ``entry``) with every ``{ref}``, ``{numref}`` or ``{doc}``
    to a target in ``gone`` (:func:`unbuilt_targets`) turned into plain text: the reference's own
    text, else the title of what it pointed to."""

    def plain(match: re.Match) -> str:
        role, body = match[1], match[2]
        explicit = EXPLICIT.fullmatch(body.strip())
        own, target = (explicit[1], explicit[2].strip()) if explicit else (None, body.strip())
        if role == "doc":  # relative to the page's folder, or to the book's root with a leading /
            base = "" if target.startswith("/") else os.path.dirname(entry)
            target = os.path.splitext(os.path.normpath(os.path.join(base, target.lstrip("/"))))[0]
        key = ("doc" if role == "doc" else "ref", target)
        return match[0] if key not in gone else (own or gone[key])

    return ROLE.sub(plain, text)


def _unlink_notebook(nb: nbformat.NotebookNode, entry: str, gone: dict[tuple[str, str], str]) -> None:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = unlink_references(cell.source, entry, gone)


def stage_book(executed: Sequence[Path], out_dir: Path, root: Path = ROOT) -> Path:
    """Lay out the Jupyter Book source tree ``out_dir/site`` and return it.

    It holds ``_config.yml``, a ``_toc.yml`` keeping only the chapters in ``executed``, the
    pages and other files of ``book/`` (no ``.py``; pages must live there), ``book/_static`` as
    ``_static`` plus the Vega bundle, and each executed chapter as ``ENTRY.ipynb`` with offline
    charts. A page's ``{ref}``/``{doc}`` to a label or page that only pages left out of this
    build define becomes plain text (:func:`unlink_references`): ``--chapters`` builds any subset.
    """
    from .plots import vega_bundle

    toc = read_toc(root)
    sources = book_sources(root, toc)
    done = {Path(p).stem: Path(p) for p in executed}
    chapters = {e: s for e, s in sources.items() if s.suffix == ".py"}
    site = Path(out_dir) / "site"
    shutil.rmtree(site, ignore_errors=True)
    skip = shutil.ignore_patterns("*.py", "_build", "_executed", "_static", "__pycache__",
                                 ".ipynb_checkpoints")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # a chapter's paired notebook (book/NAME.ipynb beside NAME.py, for the launch buttons)
        # is not a page: the executed copy takes its place
        return set(skip(folder, names)) | {n for n in names if n.endswith(".ipynb")
                                           and Path(folder, n).with_suffix(".py").exists()}

    if (root / "book").is_dir():
        shutil.copytree(root / "book", site / "book", ignore=ignore)
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "_config.yml", site / "_config.yml")
    drop = {e for e, s in chapters.items() if s.stem not in done}
    pruned = _prune(toc, drop)
    (site / "_toc.yml").write_text(yaml.safe_dump(pruned, sort_keys=False))
    built = set(toc_files(pruned))
    gone = unbuilt_targets(sources, built)
    for entry in built - set(chapters):  # the pages copied from book/ as they are
        page = next((p for p in map((site / entry).with_suffix, PAGE_SUFFIXES) if p.exists()), None)
        if page is None or not gone:
            continue
        if page.suffix == ".md":
            page.write_text(unlink_references(page.read_text(), entry, gone))
        else:
            nb = nbformat.read(page, as_version=4)
            _unlink_notebook(nb, entry, gone)
            nbformat.write(nb, page)
    for entry, src in chapters.items():
        if entry not in drop:
            nb = nbformat.read(done[src.stem], as_version=4)
            _unlink_notebook(nb, entry, gone)
            offline_charts(nb)
            # the saved ipywidgets state serves only a live front end; in the static book it
            # would embed the widgets' own (CDN-loading) chart HTML into the page
            nb.metadata.pop("widgets", None)
            for cell in nb.cells:  # papermill's injected parameters: plumbing, folded
                tags = cell.metadata.get("tags", [])
                if "injected-parameters" in tags and "hide-input" not in tags:
                    cell.metadata["tags"] = [*tags, "hide-input"]
            dest = (site / entry).with_suffix(".ipynb")
            dest.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dest)
    static = site / "_static"
    if (root / "book" / "_static").is_dir():
        shutil.copytree(root / "book" / "_static", static)
    static.mkdir(exist_ok=True)
    (static / "vega-bundle.js").write_text(vega_bundle())
    # MathJax goes through html_extra_path, not _static: Jupyter Book would add a <script> tag
    # for every .js file under _static (hundreds of MathJax components)
    stage_mathjax(site / MATHJAX_EXTRA / "_static" / "mathjax")
    return site


# MathJax's combined builds the book does not use (_config.yml loads tex-mml-chtml.js)
MATHJAX_UNUSED = ("tex-chtml*.js", "tex-svg*.js", "tex-mml-svg.js", "mml-*.js", "node-main.js", "svg")


MATHJAX_EXTRA = "_extra"  # html_extra_path in _config.yml: copied as is to the site's root


def mathjax_source() -> Path:
    """MathJax 3's ``es5`` folder as shipped by the PyPI package ``django-static-mathjax``."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    es5 = (Path(next(iter(spec.submodule_search_locations)), "static", "mathjax", "es5")
           if spec and spec.submodule_search_locations else None)
    if es5 is None or not (es5 / "tex-mml-chtml.js").exists():
        raise FileNotFoundError("MathJax is missing: the book serves it from its own _static "
                                "(no CDN); pip install -r requirements.txt (django-static-mathjax)")
    return es5


def stage_mathjax(dest: Path) -> Path:
    """Copy MathJax to ``dest`` (the built site's ``_static/mathjax``: ``mathjax_path``)."""
    shutil.copytree(mathjax_source(), dest, ignore=shutil.ignore_patterns(*MATHJAX_UNUSED),
                    dirs_exist_ok=True)
    return dest


def build_book(executed: Sequence[Path], out_dir: Path, root: Path = ROOT,
               unexecuted: bool = False) -> Path:
    """Stage and build the book (warnings are errors); return ``out_dir/html``.

    ``unexecuted``: the notebooks were not run (the committed ``book/NAME.ipynb``, for checks of
    the pages' layout), so the values the chapters ``glue`` into their prose do not exist: only
    those warnings are silenced. A previous ``out_dir/html`` is removed first, so a failed build
    leaves no stale site.
    """
    out_dir = Path(out_dir)
    html = out_dir / "html"
    shutil.rmtree(html, ignore_errors=True)
    site = stage_book(executed, out_dir, root)
    if unexecuted:
        config = yaml.safe_load((site / "_config.yml").read_text())
        sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
        sphinx_config["suppress_warnings"] = [*sphinx_config.get("suppress_warnings", []), "mystnb.glue"]
        (site / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    work = out_dir / "jupyter-book"  # Jupyter Book writes WORK/_build/{html,.doctrees}
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(site), "--path-output", str(work), "--builder", "html", "--all",
           "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log = ANSI.sub("", proc.stdout + proc.stderr).splitlines()
        warnings = [line for line in log if "WARNING" in line or "ERROR" in line]
        raise BuildError("jupyter-book build failed (warnings are errors):\n"
                         + "\n".join(warnings or log[-40:]))
    os.replace(work / "_build" / "html", html)
    return html


# ----------------------------------------------------------------------------- Sphinx


def _script_key(js: Any) -> tuple:
    """What makes two of Sphinx's script entries the same ``<script>`` tag."""
    attributes = getattr(js, "attributes", {})
    return (os.fspath(getattr(js, "filename", js) or ""), tuple(sorted(attributes.items())))


def _one_script_each(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated entries from a page's scripts (the ``html-page-context`` event).

    Sphinx 7.4 adds an inline script registered after its HTML builder started (sphinx-thebe's
    ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) twice: once as given, once
    again when it writes the pages, its empty file name now ``''`` instead of ``None``. Run
    twice, a ``const`` is a SyntaxError on every page.
    """
    scripts = context.get("script_files")
    if isinstance(scripts, list):
        once = {}
        for js in scripts:
            once.setdefault(_script_key(js), js)  # the first of each, in order
        context["script_files"] = list(once.values())


def setup(app) -> dict:
    """This module is a Sphinx extension too (``_config.yml``: ``extra_extensions``)."""
    app.connect("html-page-context", _one_script_each)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ----------------------------------------------------------------------------- command line


def _value(text: str) -> Any:
    """A ``-p`` value: a Python literal (3, 0.5, True, None, [1, 2]) or else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _seconds(text: str) -> float:
    """A ``--progress-every`` value: a number of seconds above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ioi_helpers.pipeline",
        description="Execute the book's chapters with papermill, then build the book with "
                    "Jupyter Book (warnings are errors).")
    parser.add_argument("--chapters", metavar="A,B,...",
                        help="run only these chapters (stems such as 01_task); the built book "
                             "then holds only them. Default: every chapter in _toc.yml")
    parser.add_argument("--model", metavar="NAME",
                        help="sets model_name in every chapter (default: $IOI_MODEL, else gpt2)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[],
                        metavar=("KEY", "VALUE"),
                        help="another parameter for every chapter; VALUE is read as a Python "
                             "literal when it is one, else as a string (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build", metavar="DIR",
                        help="where executed notebooks (DIR/executed) and the site "
                             "(DIR/html) go (default: %(default)s)")
    parser.add_argument("--no-build", action="store_true", help="execute only, do not build")
    parser.add_argument("--no-warm-kernel", action="store_true",
                        help="start each chapter's kernel only when it runs (by default the next "
                             "chapter's kernel starts and imports while the current one runs)")
    parser.add_argument("--no-fork-server", action="store_true",
                        help="launch each warm kernel instead of forking it from one process that "
                             "imported everything and built the model (the default on the CPU, on Linux)")
    parser.add_argument("--progress-every", type=_seconds, default=PROGRESS_EVERY, metavar="SECONDS",
                        help="without a terminal (or with CI=true), print a line with the running "
                             "chapter's cells done and time every SECONDS (default: %(default)g)")
    parser.add_argument("--traceback", action="store_true",
                        help="when a chapter fails, also print the kernel's full traceback")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def interactive(stream=None) -> bool:
    """A terminal that shows live progress: a TTY, and not CI (``$CI`` set to true or 1)."""
    stream = sys.stderr if stream is None else stream
    is_tty = getattr(stream, "isatty", lambda: False)()
    return is_tty and os.environ.get("CI", "").strip().lower() not in ("true", "1", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is None:
        from .models import default_model_name

        args.model = default_model_name()
    params = {"model_name": args.model, **{k: _value(v) for k, v in args.param}}
    names = [n.strip() for n in args.chapters.split(",") if n.strip()] if args.chapters else None
    out = args.out.resolve()
    # everything that can be checked is checked before any chapter runs: the chapters, the
    # parameters against their parameters cells, and the model
    try:
        chapters = chapter_paths(args.root, names)
        per_chapter = parameters_for(chapters, params)
    except (FileNotFoundError, ValueError, ChapterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .models import ModelUnavailableError, check_available

    try:
        check_available(params["model_name"])
    except ModelUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Chapters record their numbers for the scorecard next to the executed notebooks; a full
    # run starts from an empty folder so the scorecard can never show a stale number.
    os.environ[RESULTS_ENV_VAR] = str(out / "results")
    if names is None:
        shutil.rmtree(out / "results", ignore_errors=True)
    live = interactive()
    n = len(chapters)
    print(f"model {params['model_name']}; {n} chapter(s) -> {out / 'executed'}", flush=True)
    executed = []
    kernels = Kernels(chapters, per_chapter, warm=not args.no_warm_kernel, fork=not args.no_fork_server)
    print(f"kernels: {kernels.describe()}", flush=True)
    try:
        for k, path in enumerate(chapters, 1):
            label = f"[{k}/{n}] {path.stem}"
            progress = {"desc": label, "leave": False, "file": sys.stderr} if live else False
            lines = None if live else ProgressLines(label, args.progress_every)
            start = time.perf_counter()
            try:
                with lines or contextlib.nullcontext():  # the first kernel may wait for the fork server
                    kernel = kernels.take(k - 1)  # and the next chapter's kernel warms up meanwhile
                    executed.append(run_chapter(path, per_chapter[path], out / "executed", progress,
                                                kernel, lines))
            except ChapterError as err:
                print(f"{label} FAILED after {time.perf_counter() - start:.1f}s: {err}", file=sys.stderr)
                if args.traceback and err.trace:
                    print(f"\nthe kernel's traceback:\n{err.trace}", file=sys.stderr)
                elif err.trace:
                    print("(the kernel's full traceback: rerun with --traceback)", file=sys.stderr)
                return 1
            print(f"{label}: {time.perf_counter() - start:.1f}s", flush=True)
        kernels.close()  # the fork server holds a model: not needed for the build
        if args.no_build:
            return 0
        start = time.perf_counter()
        try:
            html = build_book(executed, out, args.root)
        except BuildError as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
        print(f"book: {time.perf_counter() - start:.1f}s -> {html / 'index.html'}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        kernels.close()


if __name__ == "__main__":
    sys.exit(main())
