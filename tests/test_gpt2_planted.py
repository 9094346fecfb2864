"""``gpt2-planted`` (issue 20): GPT-2 small's exact shape, the paper's 26 heads planted at the
paper's positions, and decoys that make every condition of every discovery rule matter.

The discovery tests run the book's own rules (:mod:`ioi_helpers.discovery`, the chapters'
defaults) on prompts of a dataset seed that the construction never saw, and compare what they
find with :data:`ioi_helpers.paper.CIRCUIT` (the planted positions are the paper's). The
condition-removal tests restate each rule from the numbers its table recorded, check that the
restatement selects exactly what the rule selected, then drop one condition at a time and
show that recovery is no longer exact, because a decoy (a head outside the circuit) meets the
rule's other conditions.
"""

from __future__ import annotations

import os

import pytest
import torch

from ioi_helpers import ablation, discovery, metrics, models, paper, planted_gpt2

# The model seed of the default tests (IOI_GPT2_PLANTED_SEED chooses another). Exact recovery is
# also checked on SECOND_SEED in every run (seed 1 missed Previous Token 4.11 while the
# distractors still wrote into the position features) and on every seed of SEEDS with -m slow.
SEEDS = range(0, 5)
SECOND_SEED = 1
MODEL_SEED = int(os.environ.get("IOI_GPT2_PLANTED_SEED", "0"))
DATA_SEED = 4242  # never used by the construction (its calibration uses planted.CALIBRATION_DATA_SEED)
DEVICE = os.environ.get("IOI_TEST_DEVICE", "cpu")
CLASSES = list(paper.CIRCUIT)


def _paper(cls: str) -> list:
    return sorted(tuple(h) for h in paper.CIRCUIT[cls])


@pytest.fixture(scope="module")
def model():
    print(f"\ngpt2-planted model seed {MODEL_SEED} (set IOI_GPT2_PLANTED_SEED to pin it)")
    return models.load_model("gpt2-planted", device=DEVICE, seed=MODEL_SEED)


@pytest.fixture(scope="module")
def setup(model):
    return discovery.Setup(model, n_prompts=100, seed=DATA_SEED)


@pytest.fixture(scope="module")
def classes(setup):
    return discovery.all_classes(setup)


def _non_circuit(heads) -> set:
    circuit = {tuple(h) for hs in paper.CIRCUIT.values() for h in hs}
    return {tuple(h) for h in heads} - circuit


# ----------------------------------------------------------------------------- shape and truth


def test_shape_is_gpt2_small_and_truth_sits_at_the_paper_heads(model):
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.n_ctx, cfg.d_vocab) == \
        (12, 12, 768, 64, 3072, 1024, 50257)
    assert models.has_paper_layout(model)
    assert not models.is_gpt2_small(model)
    assert {c: sorted(h) for c, h in model.planted.items()} == {c: _paper(c) for c in CLASSES}
    decoys = set(model.planted_decoys.values())
    assert len(decoys) == len(planted_gpt2.DECOY_LAYERS) + len(planted_gpt2.PARTNERED)
    assert not decoys & {h for hs in model.planted.values() for h in hs}


def test_bad_seed_and_unknown_model_fail_in_one_line():
    with pytest.raises(ValueError, match="seed must be an int in"):
        models.load_model("gpt2-planted", seed="1")
    with pytest.raises(models.ModelUnavailableError) as err:
        models.check_available("gpt2-plantd")
    assert "gpt2-planted" in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- discovery


def test_discovery_recovers_the_paper_heads_exactly(classes):
    found = {c: sorted(classes[c].heads) for c in CLASSES}
    assert found == {c: _paper(c) for c in CLASSES}


def test_weakest_planted_head_of_each_class_is_within_2x_of_its_threshold(setup, classes):
    """Graded strengths: the weakest planted head's rule quantity (its effect) sits between the
    threshold and twice the threshold, so exact recovery is not a matter of huge margins."""
    thr = {"Name Mover": setup.name_mover_threshold, "Negative Name Mover": setup.name_mover_threshold,
           "S-Inhibition": setup.s_inhibition_threshold, "Induction": setup.induction_threshold,
           "Duplicate Token": setup.induction_threshold, "Previous Token": setup.previous_threshold,
           "Backup Name Mover": setup.backup_threshold}
    for c in CLASSES:
        eff = classes[c].effect
        weakest = min(abs(float(eff[h])) for h in paper.CIRCUIT[c])
        assert thr[c] <= weakest <= 2 * thr[c], (c, weakest, thr[c])


def test_background_has_a_heavy_tail_below_the_threshold(model, setup, classes):
    """The largest direct effect of a head outside the circuit and the decoys is at least a
    third of the Name Mover threshold (GPT-2 small has many small effects), and below it."""
    eff = discovery.direct_effects(setup).relative
    others = _non_circuit((l, h) for l in range(12) for h in range(12)) - set(model.planted_decoys.values())
    outside = [abs(float(eff[h])) for h in others]
    thr = setup.name_mover_threshold
    assert thr / 3 <= max(outside) < thr
    assert sum(x > thr / 10 for x in outside) >= 5  # many small effects, not one


# ----------------------------------------------------------------------------- each condition matters


def _rows(cls: discovery.HeadClass):
    t = cls.table
    return {(int(r.layer), int(r["index"])): r for _, r in t.iterrows()}


def _restated(classes, setup, name: str, drop: str | None) -> list:
    """The rule of class ``name`` restated from its table's recorded numbers, with the condition
    ``drop`` removed (None: the full rule)."""
    c = classes[name]
    rows = _rows(c)
    t_nm, t_si = setup.name_mover_threshold, setup.s_inhibition_threshold
    t_ind, t_prev, t_bk = setup.induction_threshold, setup.previous_threshold, setup.backup_threshold
    out = []
    for h, r in rows.items():
        if name in ("Name Mover", "Negative Name Mover"):
            conds = {"effect": r.effect <= -t_nm if name == "Name Mover" else r.effect >= t_nm,
                     "attention": r["attn END->IO"] > r["attn END->S1+S2"]}
        elif name == "S-Inhibition":
            if h in classes["Name Mover"].heads:
                continue
            conds = {"effect": r.effect <= -t_si, "attention": r["attn END->S2"] > r["attn END->IO"]}
        elif name in ("Induction", "Duplicate Token"):
            if h in classes["S-Inhibition"].heads:
                continue
            ind = r["attn S2->S1+1"] > r["attn S2->S1"]
            conds = {"effect": r.effect <= -t_ind, "split": ind if name == "Induction" else not ind}
        elif name == "Previous Token":
            if h in classes["Induction"].heads:
                continue
            conds = {"effect": r.effect <= -t_prev,
                     "attention": r["attn S1+1->S1"] > r["max attn S1+1->other earlier"]}
        else:
            if h in {tuple(x) for x in c.extra["excluded"]}:
                continue
            conds = {"effect": r.effect <= -t_bk, "attention": r["attn END->IO"] > r["attn END->S1+S2"]}
        if all(v for k, v in conds.items() if k != drop):
            out.append(h)
    return sorted(out)


RULE_CONDITIONS = [
    ("Name Mover", "effect"), ("Name Mover", "attention"),
    ("Negative Name Mover", "effect"), ("Negative Name Mover", "attention"),
    ("S-Inhibition", "effect"), ("S-Inhibition", "attention"),
    ("Induction", "effect"), ("Duplicate Token", "effect"),
    ("Previous Token", "effect"), ("Previous Token", "attention"),
    ("Backup Name Mover", "effect"), ("Backup Name Mover", "attention"),
]


@pytest.mark.parametrize("name", CLASSES)
def test_restated_rules_select_what_discovery_selected(classes, setup, name):
    assert _restated(classes, setup, name, None) == sorted(classes[name].heads)


@pytest.mark.parametrize("name,condition", RULE_CONDITIONS)
def test_dropping_a_condition_breaks_exact_recovery(classes, setup, name, condition):
    """Without the condition a decoy (a head outside the circuit) enters the class."""
    selected = _restated(classes, setup, name, condition)
    assert selected != _paper(name)
    assert _non_circuit(selected), f"{name} without its {condition} condition admits only circuit heads"


def test_induction_step_needs_the_values_only(setup, classes):
    """Patching the S-Inhibition heads' keys and values (the paper's text) instead of their
    values (the authors' code) admits the flag-writing decoy: it changes where the S-Inhibition
    heads attend, not what they read."""
    ind, dup = discovery.induction_and_duplicate(setup, classes["S-Inhibition"].heads, receiver_input="kv")
    assert classes["Duplicate Token"].heads == _paper("Duplicate Token")
    assert setup.model.planted_decoys["flag_writer"] in ind.heads + dup.heads


def test_previous_token_step_needs_the_keys_only(setup, classes):
    """Patching every input of the Induction heads at S1+1 instead of their keys admits the
    decoy whose output the Induction heads read as values only."""
    prev = discovery.previous_token(setup, classes["Induction"].heads, receiver_input="qkv")
    assert setup.model.planted_decoys["prevx_writer"] in prev.heads


def test_repeated_token_scores_alone_would_admit_decoys(model, classes):
    """The chapters confirm Induction, Duplicate Token and Previous Token heads on repeated random
    tokens; a class read from those scores alone (no path patching) would hold decoys too."""
    from ioi_helpers import scores

    rep = scores.repeated_token_scores(model)
    for kind, decoy, cls in (("induction", "ind_junk", "Induction"), ("duplicate", "dup_junk", "Duplicate Token"),
                             ("previous", "prev_junk", "Previous Token")):
        heads = [(l, h) for l in range(12) for h in range(12)]
        confirmed = discovery.repeated_token_check(heads, rep, kind).query("confirmed")["head"].tolist()
        assert f"{model.planted_decoys[decoy][0]}.{model.planted_decoys[decoy][1]}" in confirmed
        assert all(f"{l}.{h}" in confirmed for l, h in paper.CIRCUIT[cls])


# ----------------------------------------------------------------------------- behaviour


def test_behaviour_on_held_out_prompts(model):
    """N = 500 prompts of a dataset seed the construction never saw, no BOS."""
    from ioi_helpers import dataset
    from ioi_helpers.models import get_tokenizer

    ioi = dataset.make_ioi_dataset(get_tokenizer(), 500, "mixed", seed=DATA_SEED + 1, prepend_bos=False)
    abc = dataset.make_abc_dataset(get_tokenizer(), ioi)
    s = metrics.summarize(metrics.end_logits(model, ioi), ioi)
    assert s["IO > S"] >= 0.99
    assert abs(s["logit diff"] - 3.56) <= 0.3
    assert 0.3 <= s["IO prob"] <= 0.7
    assert abs(metrics.mean_logit_diff(metrics.end_logits(model, abc), abc)) < 0.5
    values = ablation.ablation_values(model, ioi, abc, "mean")
    movers = paper.CIRCUIT["Name Mover"]
    ko = ablation.ablated_logit_diff(model, ioi, ablation.knockout_mask(model, ioi, {tuple(h): ["END"] for h in movers}),
                                     values).mean().item()
    assert 0 < 1 - ko / s["logit diff"] < 0.3
    kept = {tuple(h): [paper.KEPT_AT[c]] for c, hs in paper.CIRCUIT.items() for h in hs}
    assert ablation.faithfulness(model, ioi, values, kept).ratio >= 0.8


def test_adversarial_prompts_lower_the_logit_difference_as_in_the_paper(model):
    """Chapter 8's construction (the authors' advex.py: two extra sentences naming IO) on N = 500
    held-out prompts: logit difference and S-above-IO rate within the paper's tolerance bands.
    The control (the same sentences naming S) stays well above the adversarial case; it does
    drop (about 2.5 against the paper's 3.64), which the stand-in appendix and chapter 8 state."""
    from ioi_helpers import dataset
    from ioi_helpers.models import get_tokenizer

    tok = get_tokenizer()
    ioi = dataset.make_ioi_dataset(tok, 500, "mixed", seed=DATA_SEED + 2, prepend_bos=False)
    measured = {}
    for name in ("IO", "S"):
        adv = dataset.make_adversarial_dataset(tok, ioi, name)
        measured[name] = metrics.summarize(metrics.end_logits(model, adv), adv)
    for key, value in (("adversarial.io.logit_diff", measured["IO"]["logit diff"]),
                       ("adversarial.io.s_above_io", 1 - measured["IO"]["IO > S"])):
        lo, hi = paper.tolerance_band(paper.NUMBERS[key])
        assert lo <= value <= hi, (key, value, (lo, hi))
    assert measured["S"]["logit diff"] > measured["IO"]["logit diff"] + 1.0, measured


# ----------------------------------------------------------------------------- more seeds


@pytest.mark.parametrize("seed", [s if s == SECOND_SEED else pytest.param(s, marks=pytest.mark.slow)
                                  for s in SEEDS])
def test_discovery_exact_on_every_seed(seed):
    m = models.load_model("gpt2-planted", device=DEVICE, seed=seed)
    found = discovery.all_classes(discovery.Setup(m, n_prompts=100, seed=DATA_SEED + 10 + seed))
    assert {c: sorted(found[c].heads) for c in CLASSES} == {c: _paper(c) for c in CLASSES}
