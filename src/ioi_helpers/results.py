"""Numbers the chapters record while they execute, for the scorecard and the appendix.

Each chapter owns one JSON file ``<results dir>/<chapter>.json``; the results directory is
``$IOI_RESULTS_DIR`` (the pipeline sets it next to the executed notebooks) or
``_build/results`` under the current directory. A chapter starts its file afresh with
:func:`start`, then calls :func:`record` for every number it reports; the scorecard reads the
files back with :func:`load_all`, so nothing in the scorecard is typed in.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

RESULTS_ENV_VAR = "IOI_RESULTS_DIR"


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


def start(chapter: str, model_name: str, settings: dict | None = None,
          calibrated: Iterable[str] = ()) -> Path:
    """Begin (and empty) a chapter's results file. Returns its path.

    ``calibrated``: the ``paper.NUMBERS`` keys the model sets by construction (``model.calibrated``,
    see :func:`ioi_helpers.models.bridge_from_hf`); :func:`record` marks those entries
    ``"calibrated": True`` and the scorecard shows them as "calibrated, not reproduced".
    """
    path = _path(chapter)
    _write(path, {"chapter": chapter, "model": model_name, "settings": settings or {},
                  "calibrated": sorted(calibrated), "values": {}})
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
    return json.loads(path.read_text())


def load_all(directory: Path | None = None) -> dict[str, dict]:
    """Every chapter's recorded results, by chapter name."""
    d = directory or results_dir()
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(d).glob("*.json"))}
