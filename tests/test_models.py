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
