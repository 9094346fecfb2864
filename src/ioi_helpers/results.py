"""Numbers the chapters record while they execute, for the scorecard and the appendix.

Each chapter owns one JSON file ``<results dir>/<chapter>.json``; the results directory is
``$IOI_RESULTS_DIR`` (the pipeline sets it next to the executed notebooks) or
``_build/results`` under the current directory. A chapter starts its file afresh with
:func:`start`, then calls :func:`record` for every number it reports; the scorecard reads the
files back with :func:`load_all`, so nothing in the scorecard is typed in.

A partial run (``pipeline --chapters``) leaves the other chapters' files in place, so a results
folder can hold numbers from different runs. :func:`start` therefore records each file's
**provenance**: the model, a hash of the package's code and data (:func:`code_hash`), the
run-wide sizes (N, seed, BOS, templates) and which of them were set away from the chapter's own
defaults. ``load_all(one_run=True)`` keeps only the chapters that belong with the most recently
started one (same model, same code, same sizes) and says, one line each, which it set aside and
why; so do unreadable files (truncated, or JSON that is not a chapter's results): they are
skipped with a line naming the file, and the chapter's next run rewrites them.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

RESULTS_ENV_VAR = "IOI_RESULTS_DIR"
HERE = Path(__file__).parent
# The settings every chapter shares (pipeline -p applies them to every chapter that has them):
# numbers from chapters that ran at different ones are not from one run. "N" is how
# discovery.Setup.settings() names n_prompts.
RUN_KEYS = ("n_prompts", "seed", "prepend_bos", "template_set")
ALIASES = {"N": "n_prompts"}


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV_VAR, "_build/results"))


def _path(chapter: str) -> Path:
    return results_dir() / f"{chapter}.json"


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(value: Any):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


LARGE = 1 << 20  # a data file larger than this (ioi-tiny's weights) is hashed by its size, head and tail


def _hash_package() -> str:
    h = hashlib.sha256()
    files = sorted(HERE.glob("*.py")) + sorted(p for p in (HERE / "data").rglob("*") if p.is_file())
    for path in files:
        h.update(str(path.relative_to(HERE)).encode())
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= 2 * LARGE:
                h.update(f.read())
            else:  # retrained weights differ everywhere, in the first and last MiB too
                h.update(str(size).encode())
                h.update(f.read(LARGE))
                f.seek(-LARGE, os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()[:16]


# Hashed when this module is imported: the code the process imported. The pipeline's fork server
# imports it before forking the chapters' kernels, so one run records one hash even while the
# files are edited; each kernel started afresh hashes the files as it starts.
_CODE_HASH: list[str] = [_hash_package()]


def code_hash() -> str:
    """A hash of every module of this package and of its data files (prompt data, ioi-tiny's
    checkpoint): the code and data any recorded number can depend on, as they were when this
    module was imported."""
    if not _CODE_HASH:
        _CODE_HASH.append(_hash_package())
    return _CODE_HASH[0]


def run_sizes(settings: dict | None) -> dict:
    """The :data:`RUN_KEYS` among ``settings`` (``N`` read as ``n_prompts``)."""
    out = {}
    for k, v in (settings or {}).items():
        k = ALIASES.get(k, k)
        if k in RUN_KEYS:
            out[k] = v
    return out


def chapter_defaults(chapter: str, folder: Path | None = None) -> dict | None:
    """The :data:`RUN_KEYS` a chapter's ``parameters`` cell assigns (its defaults), read from
    ``<folder>/<chapter>.py`` (jupytext) or ``.ipynb``; ``folder``: the current directory, where
    the pipeline and Jupyter run a chapter. None when neither file is there."""
    folder = Path.cwd() if folder is None else Path(folder)
    source = None
    py, nb = folder / f"{chapter}.py", folder / f"{chapter}.ipynb"
    try:
        if py.is_file():
            lines, inside = [], False
            for line in py.read_text().splitlines():
                if line.startswith("# %%"):
                    if inside:
                        break
                    inside = '"parameters"' in line
                elif inside:
                    lines.append(line)
            source = "\n".join(lines) if inside else None
        elif nb.is_file():
            cells = json.loads(nb.read_text())["cells"]
            cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = ALIASES.get(node.targets[0].id, node.targets[0].id)
            if name in RUN_KEYS:
                try:
                    out[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def start(chapter: str, model_name: str, settings: dict | None = None,
          calibrated: Iterable[str] = ()) -> Path:
    """Begin (and empty) a chapter's results file. Returns its path.

    ``calibrated``: the ``paper.NUMBERS`` keys the model sets by construction (``model.calibrated``,
    see :func:`ioi_helpers.models.bridge_from_hf`); :func:`record` marks those entries
    ``"calibrated": True`` and the scorecard shows them as "calibrated, not reproduced".

    The file's ``provenance``: ``model``, ``code`` (:func:`code_hash`), ``sizes``
    (:func:`run_sizes` of ``settings``), ``overridden`` (the sizes that differ from the
    chapter's defaults, :func:`chapter_defaults`; all of them when those cannot be read) and
    ``started`` (a time stamp).
    """
    path = _path(chapter)
    sizes = run_sizes(settings)
    defaults = chapter_defaults(chapter)
    overridden = sorted(k for k, v in sizes.items() if defaults is None or k not in defaults or defaults[k] != v)
    provenance = {"model": model_name, "code": code_hash(), "sizes": sizes, "overridden": overridden,
                  "started": time.time()}
    _write(path, {"chapter": chapter, "model": model_name, "settings": settings or {},
                  "calibrated": sorted(calibrated), "values": {}, "provenance": provenance})
    return path


def record(chapter: str, key: str, value: Any, settings: dict | None = None,
           note: str = "") -> Any:
    """Record one number (or list) under ``key`` (ids as in :data:`ioi_helpers.paper.NUMBERS`
    where the paper has that number). Returns ``value`` so it can be used inline."""
    path = _path(chapter)
    if not path.exists():
        raise FileNotFoundError(f"results.start({chapter!r}, ...) must run before record()")
    data = json.loads(path.read_text())
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    data["values"][key] = {"value": value, "settings": settings or {}, "note": note}
    if key in data.get("calibrated", ()):
        data["values"][key]["calibrated"] = True
    _write(path, data)
    return value


def load(chapter: str) -> dict:
    path = _path(chapter)
    if not path.exists():
        raise FileNotFoundError(f"chapter {chapter!r} recorded no results (no {path}); execute it first")
    try:
        return _read(path)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; rerun chapter {chapter} to record it again") from None


class Recorded(dict):
    """Chapter name -> recorded results, with ``notes``: one line per file set aside."""

    def __init__(self, data=(), notes: Iterable[str] = ()):
        super().__init__(data)
        self.notes = list(notes)


def _read(path: Path) -> dict:
    """A chapter's results file, or ``ValueError`` saying why it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a chapter's results (a JSON {type(data).__name__})")
    problems = [k for k, t in (("chapter", str), ("model", str), ("values", dict)) if not isinstance(data.get(k), t)]
    if problems:
        raise ValueError(f"not a chapter's results (no {', '.join(problems)})")
    if data["chapter"] != path.stem:
        raise ValueError(f"records chapter {data['chapter']!r}, not {path.stem!r}")
    if not all(isinstance(v, dict) and "value" in v for v in data["values"].values()):
        raise ValueError("not a chapter's results (a value without its entry)")
    return data


def model_id(name: str) -> str:
    """One name per model: ``ioi-planted`` and ``ioi-planted(seed=0)`` are one model
    (load_model's default seed), so pages that list the models of a run name it once."""
    return name.removesuffix("(seed=0)")


def differences(data: dict, reference: dict) -> list[str]:
    """How ``data``'s run differs from ``reference``'s (model, code, sizes); empty: one run.
    Two chapters agree on a size when they ran at the same value, or both at their own default
    (chapter 1's default N is 500, the others' 100)."""
    a, b = data.get("provenance"), reference.get("provenance")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ["recorded without provenance (an older version of the book)"]
    out = []
    if model_id(str(a.get("model"))) != model_id(str(b.get("model"))):
        out.append(f"model {a.get('model')}, not {b.get('model')}")
    if a.get("code") != b.get("code"):
        out.append("other code (the package's source or data changed between the runs)")
    sa, sb = a.get("sizes", {}), b.get("sizes", {})
    for k in RUN_KEYS:
        if k in sa and k in sb and sa[k] != sb[k] and (k in a.get("overridden", ()) or k in b.get("overridden", ())):
            out.append(f"{k} {sa[k]!r}, not {sb[k]!r}")
    return out


def load_all(directory: Path | None = None, one_run: bool = False,
             exclude: Iterable[str] = ()) -> Recorded:
    """Every chapter's recorded results, by chapter name (but ``exclude``).

    A file that is not a chapter's results (truncated, not JSON, JSON of another shape) is
    skipped with one line in ``notes`` naming it (the scorecard and appendix show them): its chapter
    counts as not run until it runs again. ``one_run=True``: only the chapters of the run of the
    most recently started chapter; every other one is set aside with a line saying how it
    differs (:func:`differences`).
    """
    d = Path(directory or results_dir())
    exclude = set(exclude)
    found, notes = {}, []
    for path in sorted(d.glob("*.json")):
        if path.stem in exclude:
            continue
        try:
            found[path.stem] = _read(path)
        except ValueError as err:
            notes.append(f"{path}: {err}; skipped, rerun chapter {path.stem} to record it again")
    if one_run and found:
        latest = max(found, key=lambda c: (found[c].get("provenance") or {}).get("started", float("-inf")))
        for chapter in sorted(found):
            why = differences(found[chapter], found[latest])
            if why:
                del found[chapter]
                notes.append(f"{chapter}: set aside, not from the run of {latest} ({'; '.join(why)}); "
                             f"rerun it with the same model and settings")
    return Recorded(found, notes)
