"""Model loading: offline stand-ins, shapes, and clear errors."""

import time

import pytest
import torch

from ioi_helpers import models


@pytest.fixture(scope="module")
def gpt2_random():
    return models.load_model("gpt2-random", device="cpu")


def test_gpt2_random_has_gpt2_small_shapes(gpt2_random):
    cfg = gpt2_random.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab) == (12, 12, 768, 64, 50257)
    assert cfg.n_ctx == 1024
    hf = models.load_hf_model("gpt2-random")
    assert sum(p.numel() for p in hf.parameters()) == 124_439_808  # GPT-2 small, tied embeddings


def test_gpt2_random_runs_and_legacy_hooks_work(gpt2_random):
    tokens = torch.tensor([models.GPT2_TEST_IDS])
    logits, cache = gpt2_random.run_with_cache(tokens)
    assert logits.shape == (1, 14, 50257)
    assert cache["blocks.9.attn.hook_z"].shape == (1, 14, 12, 64)
    pattern = cache["blocks.9.attn.hook_pattern"]
    assert pattern.shape == (1, 12, 14, 14)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(1, 12, 14))
    assert torch.all(pattern.triu(1) == 0)  # causal


def test_gpt2_random_is_seeded():
    a = models.load_hf_model("gpt2-random", seed=1)
    b = models.load_hf_model("gpt2-random", seed=1)
    c = models.load_hf_model("gpt2-random", seed=2)
    wa, wb, wc = (m.transformer.h[0].attn.c_attn.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bridge_matches_hugging_face_logits():
    hf = models.load_hf_model("gpt2-random", seed=3)
    tokens = torch.tensor([models.GPT2_TEST_IDS])
    with torch.no_grad():
        expected = hf(tokens).logits
    bridge = models.load_model("gpt2-random", seed=3, device="cpu")
    with torch.no_grad():
        got = bridge(tokens)
    # compatibility mode centres the unembedding: logits move by a constant per position,
    # so log-probabilities and logit differences are what must agree
    torch.testing.assert_close(got.log_softmax(-1), expected.log_softmax(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[..., 5335] - got[..., 1757], expected[..., 5335] - expected[..., 1757],
                               atol=1e-4, rtol=1e-4)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(models.ModelUnavailableError, match="gpt2-random.*ioi-tiny"):
        models.load_model("gpt7-imaginary")


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelUnavailableError, match="no config.json"):
        models.load_model(str(tmp_path))


def test_local_checkpoint_directory_loads(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)).save_pretrained(tmp_path)
    m = models.load_model(str(tmp_path), device="cpu")
    assert (m.cfg.n_layers, m.cfg.n_heads, m.cfg.d_model) == (2, 2, 32)


def test_missing_gpt2_weights_offline_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(models.ModelUnavailableError, match="gpt2-random.*ioi-tiny"):
        models.load_model("gpt2")


def test_gpt2_without_network_fails_within_30_seconds(monkeypatch, tmp_path):
    """The real check, no monkeypatching of the network probe: on an offline machine."""
    if models._hub_reachable(timeout=3):
        pytest.skip("huggingface.co is reachable here; this checks the offline behaviour")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(models.ModelUnavailableError, match="unreachable"):
        models.load_model("gpt2")
    assert time.monotonic() - start < 30


def test_env_var_picks_the_model(monkeypatch):
    monkeypatch.setenv("IOI_MODEL", "gpt2-random")
    assert models.default_model_name() == "gpt2-random"
    monkeypatch.delenv("IOI_MODEL")
    assert models.default_model_name() == "gpt2"


def test_bad_model_name_type():
    with pytest.raises(ValueError):
        models.load_hf_model("")


def _fake_hub_cache(root, weights: bytes):
    """A hub cache holding GPT-2 small's config and the given bytes as its weights."""
    from transformers import GPT2Config

    snap = root / "models--gpt2" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (root / "models--gpt2" / "refs").mkdir()
    (root / "models--gpt2" / "refs" / "main").write_text("0" * 40)
    GPT2Config().save_pretrained(snap)
    (snap / "model.safetensors").write_bytes(weights)


def test_a_corrupt_gpt2_cache_is_reported_not_read_as_missing(monkeypatch, tmp_path):
    """A cached but unreadable checkpoint is an error that says so; it never falls through to
    "not cached" (a download, or the offline message)."""
    import huggingface_hub.constants as hf_constants

    _fake_hub_cache(tmp_path / "hub", b"not a safetensors file")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(RuntimeError, match="could not be loaded from it.*corrupt") as err:
        models.load_model("gpt2")
    assert not isinstance(err.value, models.ModelUnavailableError)


# ----------------------------------------------------------------------------- hand-over
# (the pipeline's warm kernel builds the chapter's model ahead of time: models.prepare_handover)


@pytest.fixture
def counted_builds(monkeypatch):
    """models._build replaced by a recorder returning a fresh object per build."""
    import random

    builds = []

    def build(name, device, seed):  # draws from torch's and Python's generators, as a build may
        builds.append((name, device, seed))
        torch.rand(1), random.random()
        return object()

    monkeypatch.setattr(models, "_build", build)
    monkeypatch.setattr(models, "_HANDOVER", None)
    return builds


def test_a_handed_over_model_is_taken_once_by_the_same_request(counted_builds):
    assert models.prepare_handover("some-model", device="cpu", seed=2)
    assert len(counted_builds) == 1
    with torch.no_grad():  # chapters load with gradients off, as the warm-up builds
        first = models.load_model("some-model", device="cpu", seed=2)
        assert len(counted_builds) == 1  # taken, not built
        second = models.load_model("some-model", device="cpu", seed=2)
    assert len(counted_builds) == 2 and second is not first  # one use only


@pytest.mark.parametrize("change", ["name", "seed", "device", "grad", "dtype", "torch draw",
                                    "python draw", "reseeded"])
def test_a_mismatched_request_builds_a_fresh_model_and_empties_the_slot(counted_builds, change):
    import random

    models.prepare_handover("some-model", device="cpu", seed=2)
    parked = models._HANDOVER["model"]
    request = {"name": "some-model", "device": "cpu", "seed": 2}
    if change == "name":
        request["name"] = "other-model"
    elif change == "seed":
        request["seed"] = 3
    elif change == "device":
        request["device"] = "meta"
    elif change == "torch draw":  # the chapter drew random numbers before loading
        torch.rand(1)
    elif change == "python draw":
        random.random()
    elif change == "reseeded":
        torch.manual_seed(0)
    default = torch.get_default_dtype()
    if change == "dtype":
        torch.set_default_dtype(torch.float64)
    try:
        with torch.set_grad_enabled(change == "grad"):
            got = models.load_model(**request)
            assert got is not parked and len(counted_builds) == 2
            assert models._HANDOVER is None  # a later matching call builds as well
            models.load_model("some-model", device="cpu", seed=2)
    finally:
        torch.set_default_dtype(default)
    assert len(counted_builds) == 3


def test_generators_the_build_did_not_draw_from_may_move_before_the_hand_over(monkeypatch):
    import random

    monkeypatch.setattr(models, "_build", lambda name, device, seed: object())  # draws nothing
    monkeypatch.setattr(models, "_HANDOVER", None)
    models.prepare_handover("some-model", device="cpu")
    parked = models._HANDOVER["model"]
    torch.rand(1), random.random()  # the build's result does not depend on them: still handed over
    with torch.no_grad():
        assert models.load_model("some-model", device="cpu") is parked


def test_a_failed_warm_build_parks_nothing_and_the_chapter_fails_in_the_open(monkeypatch):
    monkeypatch.setattr(models, "_HANDOVER", None)
    assert models.prepare_handover("gpt7-imaginary") is False and models._HANDOVER is None
    with pytest.raises(models.ModelUnavailableError):
        models.load_model("gpt7-imaginary")


def test_the_handed_over_model_is_the_model_a_fresh_load_gives(monkeypatch):
    monkeypatch.setattr(models, "_HANDOVER", None)
    tokens = torch.tensor([models.GPT2_TEST_IDS])
    assert models.prepare_handover("ioi-tiny", device="cpu")
    parked = models._HANDOVER["model"]
    state_after_build = torch.random.get_rng_state()
    with torch.no_grad():
        handed = models.load_model("ioi-tiny", device="cpu")
        # the generators are where building the model in the chapter would have left them
        assert torch.equal(torch.random.get_rng_state(), state_after_build)
        fresh = models.load_model("ioi-tiny", device="cpu")
        assert handed is parked and fresh is not handed
        got, cache = handed.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
        want, want_cache = fresh.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
    assert torch.equal(got, want)
    assert torch.equal(cache["blocks.1.attn.hook_z"], want_cache["blocks.1.attn.hook_z"])
    assert handed.ioi_model_name == fresh.ioi_model_name == "ioi-tiny"
    assert not any(p.requires_grad for p in handed.parameters())


def test_a_recorded_name_says_whether_the_model_has_a_planted_truth():
    assert [models.name_is_planted(n) for n in
            ("ioi-planted", "ioi-planted(seed=3)", "gpt2-planted(seed=0)", "gpt2", "gpt2-random(seed=0)",
             "ioi-tiny", "ioi-planted-copy")] == [True, True, True, False, False, False, False]
