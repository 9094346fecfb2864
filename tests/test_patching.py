"""Path patching against the literal algorithm; activation patching against TransformerLens
and against hand-written hook loops."""

from __future__ import annotations

import pytest
import torch

import oracles
import tiny_models as tm
from ioi_helpers import hooks, metrics, patching

TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest single-threaded (and deterministically) on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def all_heads(model):
    return [[(l, h)] for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]


# receivers of every kind: logits; q, k, v of given heads at END / S2 / S1+1; two layers
CASES = {
    "logits": dict(receivers="logits"),
    "q@END": dict(receivers=[(2, 1)], receiver_input="q", position="END"),
    "k@S2": dict(receivers=[(2, 3)], receiver_input="k", position="S2"),
    "v@S2": dict(receivers=[(1, 2)], receiver_input="v", position="S2"),
    "k@S1+1": dict(receivers=[(2, 0)], receiver_input="k", position="S1+1"),
    "v@S1+1": dict(receivers=[(2, 2)], receiver_input="v", position="S1+1"),
    "kv@S2, two layers": dict(receivers=[(1, 0), (2, 3)], receiver_input="kv", position="S2"),
}


def check_against_oracle(model, ds, abc, senders=None, metric=None, nontrivial=True, **case):
    groups = senders or all_heads(model)
    fast = patching.path_patch(model, ds, abc, senders=senders, metric=metric, progress=False, **case)
    ref = oracles.path_patch_oracle_sweep(model, ds, abc, groups, metric=metric, **case)
    got = fast.patched.flatten()
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < TOL
    if nontrivial:  # the comparison is not vacuous: some sender has a visible effect
        assert (ref - fast.clean).abs().max().item() > 10 * TOL
    return fast, ref


@pytest.mark.parametrize("name", list(CASES))
def test_path_patch_equals_oracle_random_model(name):
    ds, abc = tm.datasets(12)
    fast, _ = check_against_oracle(tm.random_model(), ds, abc, **CASES[name])
    assert fast.patched.shape == (3, 4)


@pytest.mark.parametrize("name", ["logits", "q@END", "k@S2"])
def test_path_patch_equals_oracle_ioi_tiny(name):
    """The project's trained stand-in; receivers: its two heads (after layer 0) with the
    largest direct effect on the logits, i.e. its Name-Mover-like heads."""
    model = tm.ioi_tiny()
    ds, abc = tm.datasets(8, seed=5)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    case = dict(CASES[name])
    if case["receivers"] != "logits":
        direct = patching.path_patch(model, ds, abc, progress=False).delta.abs()
        direct[0] = -1
        top = direct.flatten().topk(2).indices.tolist()
        case["receivers"] = [(i // H, i % H) for i in top]
    senders = [[(l, h)] for l in range(L) for h in range(0, H, 2)]
    check_against_oracle(model, ds, abc, senders=senders, nontrivial=name != "k@S2", **case)


def test_sender_groups_and_custom_metric():
    model = tm.random_model()
    ds, abc = tm.datasets(12, seed=1)
    groups = [[(0, 1), (1, 2)], [(0, 0), (0, 3), (2, 0)], [(1, 1)]]
    # log of the IO probability: on a random model the probability itself (~1e-5) moves by less
    # than the tolerance, which would make the comparison vacuous
    metric = lambda end_logits: metrics.io_prob(end_logits, ds).log().mean()  # noqa: E731
    for case in (CASES["logits"], CASES["kv@S2, two layers"], CASES["q@END"]):
        fast, _ = check_against_oracle(model, ds, abc, senders=groups, metric=metric, **case)
        assert fast.patched.shape == (3,)


def test_senders_at_or_after_receiver_have_zero_effect():
    model = tm.random_model()
    ds, abc = tm.datasets(8, seed=2)
    res = patching.path_patch(model, ds, abc, receivers=[(1, 0), (1, 3)], receiver_input="q",
                              position="END", progress=False)
    assert torch.all(res.delta[1:] == 0)  # layers 1 and 2 cannot reach layer-1 queries
    assert res.delta[0].abs().max() > 0
    ref = oracles.path_patch_oracle_sweep(model, ds, abc, [[(2, 1)]], receivers=[(1, 0)],
                                          receiver_input="q", position="END")
    assert abs(ref.item() - res.clean) < 1e-5  # the literal algorithm agrees: no effect


@pytest.mark.parametrize("name", ["logits", "q@END", "kv@S2, two layers"])
def test_path_patch_under_a_knockout_equals_oracle(name):
    """Backup Name Mover style: some heads mean-ablated in every run of the algorithm."""
    from ioi_helpers import ablation

    model = tm.random_model()
    ds, abc = tm.datasets(10, seed=6)
    ko = patching.make_knockout(model, ds, {(1, 0): None, (2, 2): ["END"], (0, 1): None},
                                reference=abc)
    fast = patching.path_patch(model, ds, abc, knockout=ko, progress=False, **CASES[name])
    ref = oracles.path_patch_oracle_sweep(model, ds, abc, all_heads(model),
                                          knockout=(ko.mask, ko.values), **CASES[name])
    assert (fast.patched.flatten() - ref).abs().max().item() < TOL
    assert (ref - fast.clean).abs().max().item() > 10 * TOL
    knocked = ablation.ablated_logit_diff(model, ds, ko.mask, ko.values).mean().item()
    assert abs(fast.clean - knocked) < 1e-5
    assert abs(fast.delta[1, 0]) < 1e-6 and abs(fast.delta[0, 1]) < 1e-6
    plain = patching.path_patch(model, ds, abc, knockout=[(1, 0), (0, 1)], progress=False,
                                **CASES[name])  # a list of heads: p_ABC means from `new`
    assert plain.clean != fast.clean


def test_with_bos_prepended():
    ds, abc = tm.datasets(8, seed=4, prepend_bos=True)
    check_against_oracle(tm.random_model(), ds, abc, **CASES["k@S2"])


def test_result_fields_and_caches_reuse():
    model = tm.random_model()
    ds, abc = tm.datasets(8)
    caches = patching.cache_path_patching(model, ds, abc)
    a = patching.path_patch(model, ds, abc, caches=caches, progress=False)
    b = patching.path_patch(model, ds, abc, caches=caches, receivers=[(2, 1)], progress=False)
    clean = metrics.logit_diff(model(ds.tokens), ds).mean().item()
    corrupted = metrics.logit_diff(model(abc.tokens), ds).mean().item()
    assert abs(a.clean - clean) < 1e-5 and abs(a.corrupted - corrupted) < 1e-5
    assert torch.allclose(a.delta, a.patched - clean, atol=1e-5)
    assert torch.allclose(a.relative, a.delta / abs(clean))
    assert torch.allclose(a.normalized, a.delta / (clean - corrupted))
    assert b.clean == a.clean
    with pytest.raises(ValueError):
        patching.path_patch(model, ds, abc, receivers="logits", position="S2")


# ----------------------------------------------------------------------------- activation patching


def tl_metric(ds):
    return lambda logits: metrics.logit_diff(logits, ds).mean()


def tl_cells(component, model, ds, source, cells, setter):
    """TransformerLens' generic activation patching on chosen (layer, pos[, head]) cells."""
    import pandas as pd
    from transformer_lens import patching as tl

    cols = ["layer", "pos", "head_index"][: len(cells[0])]
    _, cache = model.run_with_cache(source.tokens)
    with torch.no_grad():
        return tl.generic_activation_patch(
            model, ds.tokens, cache, tl_metric(ds), patch_setter=setter,
            activation_name=component, index_df=pd.DataFrame(cells, columns=cols))


@pytest.mark.parametrize("component", ["z", "q", "k", "v"])
def test_head_patching_by_named_position_equals_transformer_lens(component):
    """On one template, a named position is one absolute index: ours must equal TL's
    ``get_act_patch_attn_head_*_by_pos`` (its generic sweep, restricted to those cells)."""
    from transformer_lens import patching as tl

    model = tm.random_model()
    ds, abc = tm.single_template(6)
    names = ["IO", "S2", "END"]
    ours = patching.act_patch_heads(model, ds, abc, component, names, progress=False)
    assert ours.shape == (3, 3, 4)
    cells = [(l, int(ds.pos[n][0]), h) for l in range(3) for n in names for h in range(4)]
    ref = tl_cells(component, model, ds, abc, cells, tl.layer_pos_head_vector_patch_setter)
    assert (ours.flatten() - ref).abs().max().item() < TOL


@pytest.mark.parametrize("component", ["resid_pre", "resid_mid", "attn_out", "mlp_out"])
def test_block_patching_by_named_position_equals_transformer_lens(component):
    from transformer_lens import patching as tl

    model = tm.random_model()
    ds, abc = tm.single_template(6)
    names = ("IO", "S1", "S1+1", "S2", "END")
    ours = patching.act_patch_blocks(model, ds, abc, component, progress=False)
    cells = [(l, int(ds.pos[n][0])) for l in range(3) for n in names]
    ref = tl_cells(component, model, ds, abc, cells, tl.layer_pos_patch_setter)
    assert (ours.flatten() - ref).abs().max().item() < TOL


def test_block_patching_by_absolute_position_equals_a_hook_loop():
    """``positions=None`` (TransformerLens' sweep underneath) against one hand-written hooked
    forward per (layer, absolute position): resid_pre of the p_IOI run set to the p_ABC run's."""
    model = tm.random_model()
    ds, abc = tm.single_template(4)
    ours = patching.act_patch_blocks(model, ds, abc, "resid_pre", None, progress=False)
    _, cache = model.run_with_cache(abc.tokens)
    seq = ds.tokens.shape[1]
    ref = torch.zeros(model.cfg.n_layers, seq)
    for l in range(model.cfg.n_layers):
        name = f"blocks.{l}.hook_resid_pre"
        for p in range(seq):
            def patch(x, hook, p=p, name=name):
                x = x.clone()
                x[:, p] = cache[name][:, p]
                return x

            with torch.no_grad():
                logits = model.run_with_hooks(ds.tokens, fwd_hooks=[(name, patch)])
            ref[l, p] = metrics.logit_diff(logits, ds).mean()
    assert ours.shape == ref.shape == (3, seq)
    assert (ours - ref).abs().max().item() < TOL
    assert (ref - ref[0, 0]).abs().max().item() > 10 * TOL  # some cell moves the metric


def hand_patch(model, ds, source, name, pos_name, head=None):
    """One cell of activation patching by brute force: full forward, per-prompt index."""
    _, cache = model.run_with_cache(source.tokens)
    rows, pos = torch.arange(len(ds)), ds.pos[pos_name]

    def patch(x, hook):
        x = x.clone()
        if head is None:
            x[rows, pos] = cache[name][rows, pos]
        else:
            x[rows, pos, head] = cache[name][rows, pos, head]
        return x

    with torch.no_grad():
        logits = model.run_with_hooks(ds.tokens, fwd_hooks=[(name, patch)])
    return metrics.logit_diff(logits, ds).mean().item()


def test_named_positions_differ_per_prompt_and_match_brute_force():
    """Mixed templates: END/S2 sit at different indices; compare with a hook loop."""
    model = tm.random_model()
    ds, abc = tm.datasets(10, seed=7)
    assert len(set(ds.pos["S2"].tolist())) > 1 and len(set(ds.pos["END"].tolist())) > 1
    heads = patching.act_patch_heads(model, ds, abc, "z", ["S2", "END"], progress=False)
    blocks = patching.act_patch_blocks(model, ds, abc, "resid_pre", ["S1+1", "END"], progress=False)
    for l, j, name, h in [(0, 0, "S2", 1), (1, 1, "END", 3), (2, 0, "S2", 2)]:
        ref = hand_patch(model, ds, abc, f"blocks.{l}.attn.hook_z", name, h)
        assert abs(heads[l, j, h].item() - ref) < TOL
    for l, j, name in [(0, 0, "S1+1"), (2, 1, "END")]:
        assert abs(blocks[l, j].item() - hand_patch(model, ds, abc, f"blocks.{l}.hook_resid_pre", name)) < TOL


def test_all_position_patching_uses_transformer_lens():
    model = tm.random_model()
    ds, abc = tm.datasets(6)
    out = patching.act_patch_heads(model, ds, abc, "z", None, progress=False)
    assert out.shape == (3, 4)
    _, cache = model.run_with_cache(abc.tokens)

    def patch(x, hook):  # head 2 of layer 1, all positions
        x = x.clone()
        x[:, :, 2] = cache["blocks.1.attn.hook_z"][:, :, 2]
        return x

    with torch.no_grad():
        logits = model.run_with_hooks(ds.tokens, fwd_hooks=[("blocks.1.attn.hook_z", patch)])
    assert abs(out[1, 2].item() - metrics.logit_diff(logits, ds).mean().item()) < TOL


def test_progress_flag(monkeypatch):
    assert hooks.progress_enabled(True) and not hooks.progress_enabled(False)
    monkeypatch.setenv(hooks.PROGRESS_ENV_VAR, "1")
    assert not hooks.progress_enabled(None)
    monkeypatch.delenv(hooks.PROGRESS_ENV_VAR)
    assert hooks.progress_enabled(None) == bool(__import__("sys").stderr.isatty())


def test_run_end_logits_equal_full_forward():
    model = tm.random_model()
    ds, _ = tm.datasets(6)
    end_logits, store = hooks.run(model, ds.tokens, ds.pos["END"], cache=["blocks.1.hook_resid_pre"])
    with torch.no_grad():
        full, cache = model.run_with_cache(ds.tokens)
    assert torch.allclose(end_logits, metrics.at_end(full, ds), atol=1e-5)
    assert torch.allclose(store["blocks.1.hook_resid_pre"], cache["blocks.1.hook_resid_pre"])


def test_cache_activations_records_as_run_does_and_stops_after_the_last_one():
    model = tm.random_model()
    ds, _ = tm.datasets(6)
    names = ["blocks.1.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern"]
    zero_head = [("blocks.0.attn.hook_z", lambda z, hook: z * 0)]  # an intervention: recorded after it ran
    _, want = hooks.run(model, ds.tokens, ds.pos["END"], fwd_hooks=zero_head, cache=names)
    fired = []  # hooks after the last cached one must not run: the forward stopped
    late = [("blocks.2.hook_resid_pre", lambda x, hook: fired.append(hook.name)),
            ("ln_final.hook_in", lambda x, hook: fired.append(hook.name))]
    got = hooks.cache_activations(model, ds.tokens, names, [*zero_head, *late])
    assert sorted(got) == sorted(names) and not fired
    assert not got["blocks.0.attn.hook_z"].any()
    for n in names:
        assert torch.equal(got[n], want[n]), n
    # the intervention shows in what was recorded: without it, layer 1 reads different values
    plain = hooks.cache_activations(model, ds.tokens, names)
    assert not torch.allclose(plain["blocks.1.attn.hook_z"], got["blocks.1.attn.hook_z"])
