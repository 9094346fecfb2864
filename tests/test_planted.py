"""ioi-planted: construction, class signatures by hand-written hooked runs, knockouts, and
recovery of the planted heads by the discovery.

The model is built once per module (seed 0). Signatures are computed here from attention
patterns and weights directly (run_with_cache, hooks), not with ``ioi_helpers.scores``.
"""

from __future__ import annotations

import pytest
import torch

from ioi_helpers import ablation, dataset, discovery, metrics, models, planted

DATA_SEED = 4242  # neither the calibration seed nor discovery's default


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("ioi-cache")
        mp.setenv("IOI_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def model(cache_dir):
    return models.load_model("ioi-planted", device="cpu", seed=0)


@pytest.fixture(scope="module")
def data(model):
    tok = models.get_tokenizer()
    ds = dataset.make_ioi_dataset(tok, 56, "mixed", seed=DATA_SEED)
    return ds, dataset.make_abc_dataset(tok, ds)


@pytest.fixture(scope="module")
def cache(model, data):
    ds, _ = data
    logits, cache = model.run_with_cache(ds.tokens.to(model.cfg.device))
    return logits, cache


def _attn(cache, ds, layer, head, q, k):
    """Mean attention from position ``q`` to ``k`` (named positions) of one head."""
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    rows = torch.arange(len(ds))
    return pattern[rows, ds.pos[q], ds.pos[k]].mean().item()


# ----------------------------------------------------------------------------- construction


def test_deterministic_per_seed_and_seeds_differ():
    a, b = planted.build(3, calibrate=False), planted.build(3, calibrate=False)
    c = planted.build(4, calibrate=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.planted == b.planted
    assert not torch.equal(sa["transformer.wte.weight"], sc["transformer.wte.weight"])


@pytest.mark.parametrize("seed", range(12))
def test_layout_respects_the_algorithm_order(seed):
    heads = planted.choose_heads(seed)
    assert {c: len(h) for c, h in heads.items()} == planted.N_PER_CLASS
    flat = [h for hs in heads.values() for h in hs]
    assert len(set(flat)) == len(flat)
    for early, late in planted.ORDER:
        assert max(l for l, _ in heads[early]) < min(l for l, _ in heads[late])


def test_layouts_vary_with_the_seed():
    layouts = {tuple(sorted(h for hs in planted.choose_heads(s).values() for h in hs)) for s in range(8)}
    assert len(layouts) > 4


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "0", True, None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        planted.build(seed)


@pytest.mark.parametrize("shape", [(4, 4), (8, 2), (6, 12)])
def test_shape_too_small(shape):
    with pytest.raises(ValueError, match="at least 8 layers x 4 heads"):
        planted.build(0, *shape)


def test_load_model_bad_seed_and_name():
    with pytest.raises(ValueError, match="seed"):
        models.load_model("ioi-planted", device="cpu", seed=-3)
    assert "ioi-planted" in models.OFFLINE_MODELS
    with pytest.raises(models.ModelUnavailableError, match="ioi-planted"):
        models.load_model("ioi-planted-nope", device="cpu")


def test_bridge_carries_name_and_ground_truth(model):
    """The bridge's ``planted`` names exactly the heads whose weights were written by formula,
    read from the bridge's own weights: a planted head's OV circuit maps a few feature blocks
    (numerical rank <= 58 of 64), a distractor's random OV has full rank."""
    assert model.ioi_model_name == "ioi-planted(seed=0)"
    assert set(model.planted) == set(planted.CLASSES)
    assert model.cfg.d_vocab == 50257 and model.cfg.n_layers == 8 and model.cfg.n_heads == 4
    structured = set()
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            s = torch.linalg.svdvals((model.W_V[l, h] @ model.W_O[l, h]).double())
            if int((s > 1e-3 * s[0]).sum()) < model.cfg.d_head:
                structured.add((l, h))
    named = [tuple(x) for heads in model.planted.values() for x in heads]
    assert len(named) == len(set(named)) == sum(planted.N_PER_CLASS.values())
    assert set(named) == structured


# ----------------------------------------------------------------------------- behaviour


def test_behaviour(model, data, cache):
    ds, abc = data
    logits, _ = cache
    ld = metrics.logit_diff(logits, ds)
    assert (ld > 0).float().mean() >= 0.97
    assert 3.0 < ld.mean() < 4.1
    p = metrics.io_prob(logits, ds).mean()
    assert 0.25 < p < 0.75
    ld_abc = metrics.logit_diff(metrics.end_logits(model, abc), abc).mean()
    assert abs(ld_abc) < 0.5


# ----------------------------------------------------------------------------- signatures


def test_name_mover_attention_and_copy(model, data, cache):
    ds, _ = data
    _, c = cache
    for cls in ("Name Mover", "Negative Name Mover"):
        for l, h in model.planted[cls]:
            io = _attn(c, ds, l, h, "END", "IO")
            s = _attn(c, ds, l, h, "END", "S1") + _attn(c, ds, l, h, "END", "S2")
            assert io > s, (cls, l, h, io, s)
    # copy score by hand: the residual after block 0 at each name, through the head's OV,
    # the final LayerNorm and the unembedding; the name among the top 5 logits
    resid = c["blocks.0.hook_resid_post"]
    rows = torch.arange(len(ds))
    x = torch.cat([resid[rows, ds.pos[p]] for p in ("IO", "S1", "S2")])
    target = torch.cat([ds.tokens[rows, ds.pos[p]] for p in ("IO", "S1", "S2")])
    for cls, sign in (("Name Mover", 1.0), ("Negative Name Mover", -1.0), ("Backup Name Mover", 1.0)):
        for l, h in model.planted[cls]:
            with torch.no_grad():
                v = model.blocks[l].ln1(x[:, None])[:, 0] @ model.W_V[l, h] + model.b_V[l, h]
                out = sign * (v @ model.W_O[l, h])
                logits = model.unembed(model.ln_final(out[:, None]))[:, 0]
            hit = (logits.topk(5, -1).indices == target[:, None]).any(-1).float().mean()
            assert hit > 0.9, (cls, l, h, hit)
            wrong = (-logits).topk(5, -1).indices == target[:, None]
            assert wrong.any(-1).float().mean() < 0.1


def test_s_inhibition_attends_s2(model, data, cache):
    ds, _ = data
    _, c = cache
    for l, h in model.planted["S-Inhibition"]:
        s2 = _attn(c, ds, l, h, "END", "S2")
        assert s2 > 0.3 and s2 > 3 * _attn(c, ds, l, h, "END", "IO")


def test_s_inhibition_values_carry_token_and_position(model, data, cache):
    """App. A's experiment by hand: the S-Inhibition heads' outputs at END taken from a copy of
    each prompt whose name slots are swapped. Inverting the position signal alone (IO and S1
    slots swapped, S2 kept: B A B) must flip the answer; inverting the token signal alone
    (B A A: S2 now repeats the IO's name, which sits at S1's old position) must not."""
    ds, _ = data
    logits, _ = cache
    clean = metrics.logit_diff(logits, ds).mean().item()
    rows = torch.arange(len(ds))
    io, s1, s2, end = (ds.pos[k] for k in ("IO", "S1", "S2", "END"))

    def patched(slots):  # slots: the original slot whose name fills IO, S1, S2
        tokens = ds.tokens.clone()
        for dst, src in zip((io, s1, s2), (ds.pos[k] for k in slots)):
            tokens[rows, dst] = ds.tokens[rows, src]
        names = {f"blocks.{l}.attn.hook_z" for l, _ in model.planted["S-Inhibition"]}
        _, src_cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=lambda n: n in names)

        def put(z, hook):
            layer = int(hook.name.split(".")[1])
            for l, h in model.planted["S-Inhibition"]:
                if l == layer:
                    z[rows, end, h] = src_cache[hook.name][rows, end, h]
            return z

        with torch.no_grad():
            out = model.run_with_hooks(ds.tokens.to(model.cfg.device),
                                       fwd_hooks=[(n, put) for n in sorted(names)])
        return metrics.logit_diff(out, ds).mean().item()

    assert abs(patched(("IO", "S1", "S2")) - clean) < 1e-3  # patching the run's own outputs
    assert patched(("S1", "IO", "S2")) < 0  # position inverted: attention moves to the IO's slot
    assert 0 < patched(("S1", "IO", "IO")) < clean  # token inverted: a smaller push


def test_repeated_token_heads_by_hand(model):
    gen = torch.Generator().manual_seed(7)
    n, half = 20, 15
    first = torch.stack([torch.randperm(50000, generator=gen)[:half] for _ in range(n)])
    tokens = torch.cat([first, first], 1)
    _, c = model.run_with_cache(tokens.to(model.cfg.device))
    want = {"Induction": 1, "Duplicate Token": 0, "Previous Token": None}
    for cls, offset in want.items():
        for l, h in model.planted[cls]:
            pat = c[f"blocks.{l}.attn.hook_pattern"][:, h]
            total = 0.0
            for i in range(half, 2 * half):  # second copy: brute-force loop over queries
                key = i - 1 if offset is None else i - half + offset
                total += pat[:, i, key].mean().item()
            assert total / half >= 0.5, (cls, l, h, total / half)


# ----------------------------------------------------------------------------- knockouts


@pytest.fixture(scope="module")
def means(model, data):
    ds, abc = data
    return ablation.ablation_values(model, ds, abc)


def _ablated_run(model, ds, means, heads, cache_names=()):
    mask = ablation.knockout_mask(model, ds, heads)
    store = {}

    def save(x, hook):
        store[hook.name] = x.detach()

    hooks = ablation.ablation_hooks(model, mask, means) + [(n, save) for n in cache_names]
    with torch.no_grad():
        logits = model.run_with_hooks(ds.tokens.to(model.cfg.device), fwd_hooks=hooks)
    return logits, store


def test_knockouts_break_what_they_should(model, data, cache, means):
    ds, _ = data
    logits, c = cache
    clean = metrics.logit_diff(logits, ds).mean().item()
    P = model.planted
    pat = lambda l: f"blocks.{l}.attn.hook_pattern"

    def attn(store, head, q, k):
        l, h = head
        p = store[pat(l)][:, h]
        return p[torch.arange(len(ds)), ds.pos[q], ds.pos[k]].mean().item()

    # Previous Token knocked out: the Induction heads stop attending S2 -> S1+1
    head = P["Induction"][0]
    _, st = _ablated_run(model, ds, means, P["Previous Token"], [pat(head[0])])
    assert attn(st, head, "S2", "S1+1") < 0.5 * _attn(c, ds, *head, "S2", "S1+1")
    # Induction + Duplicate Token knocked out: S-Inhibition heads stop attending S2
    head = P["S-Inhibition"][0]
    _, st = _ablated_run(model, ds, means, P["Induction"] + P["Duplicate Token"], [pat(head[0])])
    assert attn(st, head, "END", "S2") < 0.5 * _attn(c, ds, *head, "END", "S2")
    # S-Inhibition knocked out: the Name Movers attend S as much as the IO; logit diff < 0
    head = P["Name Mover"][0]
    lo, st = _ablated_run(model, ds, means, P["S-Inhibition"], [pat(head[0])])
    assert attn(st, head, "END", "S1") + attn(st, head, "END", "S2") > attn(st, head, "END", "IO")
    assert metrics.logit_diff(lo, ds).mean() < 0.2 * clean
    # Name Movers knocked out: the backups take over (< 30% loss); with them knocked out
    # as well the logit diff collapses; the Negative Name Movers lower the logit diff
    backup = P["Backup Name Mover"][0]
    lo, st = _ablated_run(model, ds, means, P["Name Mover"], [pat(backup[0])])
    assert metrics.logit_diff(lo, ds).mean() > 0.7 * clean
    assert _attn(c, ds, *backup, "END", "IO") < 0.1  # quiet while the Name Movers work
    assert attn(st, backup, "END", "IO") > 0.3  # attends the IO once they are knocked out
    lo, _ = _ablated_run(model, ds, means, P["Name Mover"] + P["Backup Name Mover"])
    assert metrics.logit_diff(lo, ds).mean() < 0.3 * clean
    lo, _ = _ablated_run(model, ds, means, P["Negative Name Mover"])
    assert metrics.logit_diff(lo, ds).mean() > clean


def test_planted_circuit_is_faithful(model, data, means):
    ds, _ = data
    kept = {"Name Mover": "END", "Negative Name Mover": "END", "S-Inhibition": "END",
            "Backup Name Mover": "END", "Induction": "S2", "Duplicate Token": "S2",
            "Previous Token": "S1+1"}
    circuit = {h: [kept[c]] for c, hs in model.planted.items() for h in hs}
    assert ablation.faithfulness(model, ds, means, circuit).ratio > 0.8
    # and without the Name Movers the circuit is not
    no_nm = {h: k for h, k in circuit.items() if h not in model.planted["Name Mover"]
             and h not in model.planted["Backup Name Mover"]}
    assert ablation.faithfulness(model, ds, means, no_nm).ratio < 0.5


# ----------------------------------------------------------------------------- discovery


def _check_recovery(model, data_seed):
    classes = discovery.all_classes(discovery.Setup(model, seed=data_seed))
    for name in planted.CLASSES:
        assert classes[name].heads == model.planted[name], (name, classes[name].heads)


def test_discovery_recovers_the_planted_heads(model):
    _check_recovery(model, 0)


def test_discovery_recovers_the_planted_heads_on_a_second_seed(cache_dir):
    """Exact recovery on one seed could be luck of the layout: a second model seed (other heads
    for every class) and a second dataset seed, by default."""
    _check_recovery(models.load_model("ioi-planted", device="cpu", seed=1), 101)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5, 6])
def test_discovery_recovers_the_planted_heads_other_seeds(seed, cache_dir):
    _check_recovery(models.load_model("ioi-planted", device="cpu", seed=seed), 100 + seed)
