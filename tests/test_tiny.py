"""ioi-tiny: the training script works, the bundled checkpoint loads offline, and it has the
measured properties it claims on held-out prompts."""

import json
import os
import platform
from dataclasses import fields

import pytest
import torch

from ioi_helpers import evaluate_tiny, models, tiny_splits, train_tiny
from ioi_helpers.dataset import prompt_data

TRAINING_JSON = models.TINY_DIR / "training.json"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(TRAINING_JSON.read_text())


@pytest.fixture(scope="module")
def evaluation() -> dict:
    torch.set_num_threads(2)
    return evaluate_tiny.evaluate("ioi-tiny")


# ----------------------------------------------------------------------------- splits


def test_splits_hold_out_pairs_templates_and_places_but_no_name():
    names = prompt_data()["names"]
    train_ok = tiny_splits.pair_filter("train")
    seen = {n for a in names for b in names if a != b and train_ok(a, b) for n in (a, b)}
    assert seen == set(names)  # every name is trained on
    for a in names[:30]:
        for b in names[:30]:
            if a == b:
                continue
            assert tiny_splits.pair_bucket(a, b) == tiny_splits.pair_bucket(b, a)
            assert sum(tiny_splits.pair_filter(s)(a, b) for s in tiny_splits.SPLITS) == 1
    held = tiny_splits.split_templates(True)
    assert held and not set(held) & set(tiny_splits.split_templates(False))
    assert len(held) + len(tiny_splits.split_templates(False)) == 30
    assert not set(tiny_splits.HELD_OUT_PLACES) & set(tiny_splits.split_places(False))


def test_test_split_prompts_are_unseen_combinations():
    tok = models.get_tokenizer()
    ds = tiny_splits.split_dataset(tok, "test", 50, seed=3, unseen_templates_and_places=True)
    train_ok = tiny_splits.pair_filter("train")
    for p in ds.prompts:
        assert not train_ok(p.io, p.s)
        assert p.template.index in tiny_splits.HELD_OUT_TEMPLATES
        assert p.place in tiny_splits.HELD_OUT_PLACES


# ----------------------------------------------------------------------------- the script


def test_short_training_run_learns_and_loads(tmp_path):
    """16 steps (seconds on an idle core): the loss goes down and the output loads through load_model."""
    cfg = train_tiny.TrainConfig(steps=16, warmup=4, batch_ioi=24, batch_abc=4, batch_rep=4,
                                 n_negatives=256, calibrate=False)
    rec = train_tiny.run(cfg, tmp_path, evaluate_after=False)
    hist = rec["history"]
    assert hist[-1]["step"] == 15
    assert hist[-1]["end_ioi"] < hist[0]["end_ioi"] - 1.0
    assert hist[-1]["total"] < hist[0]["total"]
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["sha256"] == train_tiny.sha256(tmp_path / "model.safetensors")
    bridge = models.load_model(str(tmp_path), device="cpu")
    assert next(bridge.parameters()).dtype == torch.float32
    assert (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_vocab) == (cfg.n_layer, cfg.n_head, 50257)
    logits = bridge(torch.tensor([models.GPT2_TEST_IDS]))
    assert logits.shape == (1, 14, 50257) and torch.isfinite(logits).all()


def test_cli_defaults_are_the_config_defaults():
    args = train_tiny.build_parser().parse_args([])
    for f in fields(train_tiny.TrainConfig):
        got = getattr(args, f.name)
        assert (tuple(got) if f.name == "rep_len" else got) == f.default, f.name
    args = train_tiny.build_parser().parse_args(["--steps", "7", "--rep-len", "3", "9", "--calibrate", "false"])
    assert (args.steps, tuple(args.rep_len), args.calibrate) == (7, (3, 9), False)


# ----------------------------------------------------------------------------- the checkpoint


def test_bundled_checkpoint_loads_offline_in_float32(record, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = models.TINY_DIR / "model.safetensors"
    assert weights.stat().st_size <= 16_000_000
    assert train_tiny.sha256(weights) == record["sha256"]
    bridge = models.load_model("ioi-tiny", device="cpu")
    assert next(bridge.parameters()).dtype == torch.float32
    assert bridge.cfg.d_vocab == 50257
    assert bridge.cfg.n_layers == record["architecture"]["n_layer"]


def test_training_json_is_complete(record):
    for key in ("config", "architecture", "training_mix", "splits", "calibration", "steps",
                "wall_seconds", "sha256", "evaluation", "checks", "history"):
        assert key in record, key
    assert record["wall_seconds"] < 15 * 60
    cfg = train_tiny.TrainConfig(**{**record["config"], "rep_len": tuple(record["config"]["rep_len"])})
    assert cfg == train_tiny.TrainConfig()  # the bundled run is `python -m ioi_helpers.train_tiny`
    assert record["checks"] == evaluate_tiny.checks(record["evaluation"])


def test_held_out_accuracy_and_logit_diff(evaluation):
    for split in ("test", "test_unseen_templates"):
        r = evaluation[split]
        assert r["io_above_s"] >= 0.97, (split, r)
        assert 2.0 <= r["logit_diff"] <= 8.0, (split, r)


NO_INDUCTION = ("not reached by the bundled checkpoint: the repeated-token loss stayed on its "
                "plateau within the CPU budget (see training.json history and the appendix)")


def test_no_induction_or_previous_token_head_a_known_absence(evaluation):
    """Asserted as an absence (NO_INDUCTION): on repeated random tokens no head of ioi-tiny
    reaches 0.5, by hand (a plain run_with_cache: from each token of the second copy, the mean
    attention to the token after its first occurrence, and to the token before it), and the
    evaluation reports the same maxima. Training that reaches them makes this fail: then the
    appendix's claim changes with it."""
    from ioi_helpers import scores

    model = models.load_model("ioi-tiny", device="cpu")
    n = 20
    tokens = scores.repeated_random_tokens(50, n, seed=0, vocab_size=model.cfg.d_vocab)
    _, cache = model.run_with_cache(tokens)
    q = torch.arange(n, 2 * n)
    induction = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][:, :, q, q - n + 1].mean((0, 2))
                             for l in range(model.cfg.n_layers)])
    previous = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][:, :, q, q - 1].mean((0, 2))
                            for l in range(model.cfg.n_layers)])
    assert induction.max().item() < 0.5 and previous.max().item() < 0.5
    assert evaluation["induction"]["max"] == pytest.approx(induction.max().item(), abs=1e-4)
    assert evaluation["previous_token"]["max"] == pytest.approx(previous.max().item(), abs=1e-4)


def test_top3_direct_effect_heads_carry_half_the_logit_diff(evaluation):
    assert evaluation["ablation"]["fraction_removed"] >= 0.5


def test_evaluation_matches_training_json(record, evaluation):
    saved = record["evaluation"]
    for split in ("test", "test_unseen_templates"):
        for key in ("io_above_s", "logit_diff", "io_prob"):
            assert evaluation[split][key] == pytest.approx(saved[split][key], abs=1e-3)
    assert evaluation["direct_effect"]["top3"] == saved["direct_effect"]["top3"]
    assert evaluation["ablation"]["fraction_removed"] == pytest.approx(
        saved["ablation"]["fraction_removed"], abs=1e-3)


@pytest.mark.slow
def test_full_training_reproduces_the_checkpoint(record, tmp_path):
    """Retrain with the recorded config (minutes) and compare with training.json."""
    cfg = train_tiny.TrainConfig(**{**record["config"], "rep_len": tuple(record["config"]["rep_len"])})
    rec = train_tiny.run(cfg, tmp_path, evaluate_after=True)
    ev, saved = rec["evaluation"], record["evaluation"]
    same_machine = (rec["machine"] == record["machine"])
    tol = 1e-3 if rec["sha256"] == record["sha256"] else 0.05
    for split in ("test", "test_unseen_templates"):
        assert ev[split]["io_above_s"] == pytest.approx(saved[split]["io_above_s"], abs=max(tol, 0.01))
        assert ev[split]["logit_diff"] == pytest.approx(saved[split]["logit_diff"], rel=tol, abs=tol)
    assert ev["induction"]["max"] == pytest.approx(saved["induction"]["max"], abs=max(tol, 0.02))
    if same_machine and os.environ.get("IOI_TINY_EXPECT_BITWISE", "1") == "1":
        # same CPU kind and thread count: training is bitwise deterministic
        assert rec["sha256"] == record["sha256"], (platform.platform(), rec["machine"])
