"""Constructed weights cached on disk, so a chapter does not rebuild them every time.

``gpt2-random`` draws GPT-2 small's 124M weights from a seeded generator: 9 s on one CPU core,
paid again by every chapter's kernel. :func:`cached_model` builds such a model once and stores
it with ``save_pretrained`` under ``$IOI_CACHE_DIR/weights`` (default
``~/.cache/ioi-circuit-book/weights``); later loads read the safetensors file instead, bit for
bit the same weights.

An entry is keyed by everything that goes into the construction (:func:`entry_key`): the
model's name and seed, the source of the code the caller names, and, for every caller alike, the
prompt data (a builder may calibrate on prompts), the tokenizer's files (they decide the names'
token ids) and the versions of the libraries that draw, compute and tokenize
(:func:`ioi_helpers.cache.versions`). So a changed seed, constructor, name list, tokenizer or
library never reuses stale weights. An entry that cannot be read is rebuilt with a warning that
names it.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from . import cache
from .cache import cache_dir

SUBDIR = "weights"
# the data files a construction may read (the prompt data: names, places, objects, templates)
DATA_FILES: tuple[Path, ...] = tuple(cache.HERE / f for f in cache.DATA_FILES)


class WeightsCacheWarning(UserWarning):
    """A cached model could not be read and was rebuilt."""


def weights_dir() -> Path:
    return cache_dir() / SUBDIR


def _source(obj: object) -> str:
    if isinstance(obj, (str, bytes)):
        return obj if isinstance(obj, str) else obj.decode(errors="replace")
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # defined interactively: hash its bytecode instead
        code = getattr(obj, "__code__", None)
        if code is None:
            raise
        return f"{code.co_name}:{code.co_code.hex()}:{code.co_consts!r}"


def key_inputs() -> dict[str, str]:
    """What every entry's key holds besides the caller's name, seed and code: the library
    versions, the bytes of :data:`DATA_FILES` and the tokenizer's files (hashed)."""
    data = hashlib.sha256()
    for path in DATA_FILES:
        data.update(path.name.encode())
        data.update(path.read_bytes() if path.exists() else b"<missing>")
    return {**cache.versions(), "data": data.hexdigest(),
            "tokenizer_files": cache.tokenizer_hash()}


def entry_key(name: str, seed: int, code: Sequence[object]) -> str:
    """A hash of the name, seed, the source of ``code`` (functions, classes, modules or text)
    and :func:`key_inputs`."""
    h = hashlib.sha256()
    inputs = key_inputs()
    for part in (name, str(seed), *(f"{k}={v}" for k, v in sorted(inputs.items())),
                 *map(_source, code)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def entry_path(name: str, seed: int, code: Sequence[object]) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return weights_dir() / f"{slug}-seed{seed}-{entry_key(name, seed, code)}"


ATTRIBUTES = "attributes.txt"


def cached_model(name: str, seed: int, build: Callable[[], object], code: Sequence[object],
                 keep: Sequence[str] = ()):
    """``build()`` (a Hugging Face ``PreTrainedModel``), or the copy stored for the same key.

    ``code``: everything whose source decides the weights (at least ``build`` itself and the
    functions and modules it uses). ``keep``: attributes that ``build`` sets on the model
    (Python literals: dicts, lists, tuples, numbers, strings), stored beside the weights and
    set again on a load. The entry is written to a temporary folder and renamed into place,
    so an interrupted run never leaves a half-written entry.
    """
    path = entry_path(name, seed, code)
    built = None
    if (path / "config.json").exists():
        try:
            model = _load(path)
            if keep:
                attributes = ast.literal_eval((path / ATTRIBUTES).read_text())
                for attr in keep:
                    setattr(model, attr, attributes[attr])
            return model
        except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt, loudly
            warnings.warn(f"weights cache: could not read {path} ({type(err).__name__}: {err}); "
                          f"rebuilding it", WeightsCacheWarning, stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
    built = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            with _quiet():
                built.save_pretrained(tmp)
            if keep:
                (tmp / ATTRIBUTES).write_text(repr({attr: getattr(built, attr) for attr in keep}))
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:  # another process stored it first, or the disk is read-only: keep going
        pass
    return built


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    with _quiet():
        return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)


@contextmanager
def _quiet():
    """No "Loading weights" / "Writing model shards" bars (they would clutter every chapter)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
