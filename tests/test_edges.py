"""Edge graph, edge patching and edge scores (ioi_helpers.edges), each checked against an
independent computation: a brute-force enumeration of the graph, a literal rebuild of every
receiver's input from its senders' outputs, and finite differences of the metric on the edge."""

from __future__ import annotations

import pytest
import torch

from ioi_helpers import edges as E
from ioi_helpers import metrics

from test_autodiscovery import double_model
from tiny_models import datasets, random_model

# The number of edges in MIB's GPT-2 small circuit file (circuits/ioi-eap-ig.json of
# hannamw/MIB-circuit-track, commit b759df3: 32,491 keys under "edges"): an external reference
# that the brute-force count below must reproduce, not an input of the code.
MIB_GPT2_SMALL_EDGES = 32491


# ----------------------------------------------------------------------------- the graph


def _brute_force_edges(L: int, H: int) -> set[str]:
    """Every (writer, reader) pair where the writer runs before the reader reads, named as MIB
    names edges. Time: the embedding at 0, layer l's attention at 2l+1, its MLP at 2l+2, the
    unembedding at 2L+1; a head reads q, k and v separately."""
    writers = [("input", 0)]
    readers = []
    for l in range(L):
        for h in range(H):
            writers.append((f"a{l}.h{h}", 2 * l + 1))
            readers += [(f"a{l}.h{h}", f"<{c}>", 2 * l + 1) for c in "qkv"]
        writers.append((f"m{l}", 2 * l + 2))
        readers.append((f"m{l}", "", 2 * l + 2))
    readers.append(("logits", "", 2 * L + 1))
    return {f"{w}->{r}{suffix}" for w, tw in writers for r, suffix, tr in readers if tw < tr}


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 4), (8, 4), (12, 12)])
def test_edge_count_formula_matches_brute_force_enumeration(shape):
    L, H = shape
    brute = _brute_force_edges(L, H)
    graph = E.edge_graph(L, H)
    assert E.count_edges(L, H) == len(brute) == graph.n_edges
    names = graph.edge_names()
    assert len(names) == len(set(names)) and set(names) == brute


def test_gpt2_small_count_is_mibs():
    assert len(_brute_force_edges(12, 12)) == MIB_GPT2_SMALL_EDGES
    assert E.count_edges(12, 12) == MIB_GPT2_SMALL_EDGES


def test_indices_match_names():
    g = E.edge_graph(3, 4)
    for i, name in enumerate(g.senders):
        assert E.sender_index(4, name) == i
    for i, name in enumerate(g.receivers):
        assert E.receiver_index(3, 4, name) == i


# ----------------------------------------------------------------------------- edge patching


def _record(model, tokens, names, extra=()):
    store = {}

    def save(x, hook):
        store[hook.name] = x.detach().clone()

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=list(extra) + [(n, save) for n in names])
    return store


def _literal_patched_metric(model, ioi, abc, keep):
    """The edge-patched run, written the long way: at every receiver the input is rebuilt from
    scratch as the sum of its senders' outputs (this run's output along a kept edge, the p_ABC
    output along a removed one) plus the attention biases of the layers before it."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    g = E.edge_graph(L, H)
    W_O = [model.blocks[l].attn.W_O for l in range(L)]
    b_O = [model.blocks[l].attn.b_O for l in range(L)]
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_z" for l in range(L)] + \
            [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    corr = {k.replace("hook_in", "hook_resid_pre"): v for k, v in _record(model, abc.tokens, names).items()}
    cur: dict[str, torch.Tensor] = {}

    def outputs(source, upto_layer_heads, upto_layer_mlps):
        """{sender name: output [b, p, d]} of the senders before the given layers."""
        out = {"input": source["input"]}
        for l in range(upto_layer_heads):
            for h in range(H):
                out[f"a{l}.h{h}"] = source["z", l][:, :, h] @ W_O[l][h]
        for l in range(upto_layer_mlps):
            out[f"m{l}"] = source["mlp", l]
        return out

    def rebuild(receiver, n_head_layers, n_mlp_layers):
        c_out = outputs(cur, n_head_layers, n_mlp_layers)
        a_out = outputs(corr_views, n_head_layers, n_mlp_layers)
        r = g.receivers.index(receiver)
        total = sum(b_O[l] for l in range(n_head_layers))
        for name in c_out:
            s = g.senders.index(name)
            total = total + (c_out[name] if keep[s, r] else a_out[name])
        return total

    corr_views = {"input": corr["blocks.0.hook_resid_pre"]}
    for l in range(L):
        corr_views["z", l] = corr[f"blocks.{l}.attn.hook_z"]
        corr_views["mlp", l] = corr[f"blocks.{l}.hook_mlp_out"]

    def rec_input(x, hook):
        cur["input"] = x.clone()
        return x

    def rec_z(x, hook, l):
        cur["z", l] = x.clone()
        return x

    def rec_mlp(x, hook, l):
        cur["mlp", l] = x.clone()
        return x

    def qkv(x, hook, l, c):
        x = x.clone()
        for h in range(H):
            x[:, :, h] = rebuild(f"a{l}.h{h}<{c}>", l, l)
        return x

    fwd = [("blocks.0.hook_resid_pre", rec_input)]
    for l in range(L):
        fwd += [(f"blocks.{l}.attn.hook_{c}_input", lambda x, hook, l=l, c=c: qkv(x, hook, l, c)) for c in "qkv"]
        fwd += [(f"blocks.{l}.attn.hook_z", lambda x, hook, l=l: rec_z(x, hook, l)),
                (f"blocks.{l}.hook_mlp_in", lambda x, hook, l=l: rebuild(f"m{l}", l + 1, l)),
                (f"blocks.{l}.hook_mlp_out", lambda x, hook, l=l: rec_mlp(x, hook, l))]
    fwd.append((f"blocks.{L - 1}.hook_resid_post", lambda x, hook: rebuild("logits", L, L)))
    saved = model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    try:
        with torch.no_grad():
            logits = model.run_with_hooks(ioi.tokens, fwd_hooks=fwd)
    finally:
        model.set_use_split_qkv_input(saved[0])
        model.set_use_hook_mlp_in(saved[1])
    return metrics.logit_diff(logits, ioi).mean().item()


def _plain(model, tokens, ds):
    with torch.no_grad():
        return metrics.logit_diff(model(tokens), ds).mean().item()


def test_edge_patching_equals_literal_rebuild():
    model = random_model()
    ioi, abc = datasets(6)
    g = E.graph_of(model)
    gen = torch.Generator().manual_seed(3)
    for p_keep in (0.3, 0.7):
        keep = (torch.rand(g.mask.shape, generator=gen) < p_keep) & g.mask
        got = E.edge_patch(model, ioi, abc, keep, batch_size=4)  # two batches
        want = _literal_patched_metric(model, ioi, abc, keep)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    # the two ends: every edge kept is the p_IOI run, none kept the p_ABC run
    assert E.edge_patch(model, ioi, abc, g.mask) == pytest.approx(_plain(model, ioi.tokens, ioi), rel=1e-4, abs=1e-5)
    empty = torch.zeros_like(g.mask)
    assert E.edge_patch(model, ioi, abc, empty) == pytest.approx(_plain(model, abc.tokens, ioi), rel=1e-4, abs=1e-5)


def test_a_stack_of_edge_sets_equals_one_call_per_set():
    """keep of shape [K, S, R] runs K edge sets at once; each row must be what the literal
    rebuild gives for its set (and the plain call), in any batching of the prompt copies."""
    model = random_model()
    ioi, abc = datasets(5)
    g = E.graph_of(model)
    gen = torch.Generator().manual_seed(7)
    stack = torch.stack([(torch.rand(g.mask.shape, generator=gen) < p) & g.mask
                         for p in (0.0, 0.2, 0.6, 1.0)])
    for batch_size in (None, 3):
        got = E.patched_logit_diffs(model, ioi, abc, stack, batch_size=batch_size)
        assert got.shape == (4, 5)
        for k in range(4):
            assert got[k].mean().item() == pytest.approx(
                _literal_patched_metric(model, ioi, abc, stack[k]), rel=1e-4, abs=1e-4)
            assert torch.allclose(got[k], E.patched_logit_diffs(model, ioi, abc, stack[k]), atol=1e-5)
    with pytest.raises(ValueError, match="keep must be"):
        E.patched_logit_diffs(model, ioi, abc, stack[:, :3])


# ----------------------------------------------------------------------------- EAP / EAP-IG


def _sender_delta(model, ioi, abc, sender):
    """p_ABC - p_IOI output of a sender, by the test's own hooks."""
    if sender == "input":
        name = "blocks.0.hook_resid_pre"
        return _record(model, abc.tokens, [name])[name.replace("hook_resid_pre", "hook_in")] - \
            _record(model, ioi.tokens, [name])[name.replace("hook_resid_pre", "hook_in")]
    if sender.startswith("m"):
        name = f"blocks.{int(sender[1:])}.hook_mlp_out"
        return _record(model, abc.tokens, [name])[name] - _record(model, ioi.tokens, [name])[name]
    l, h = map(int, sender[1:].split(".h"))
    name = f"blocks.{l}.attn.hook_z"
    dz = _record(model, abc.tokens, [name])[name][:, :, h] - _record(model, ioi.tokens, [name])[name][:, :, h]
    return dz @ model.blocks[l].attn.W_O[h]


def _fd_on_edge(model, ioi, abc, sender, receiver, alpha=1.0, eps=1e-4):
    """d metric / d t of adding t x (sender's p_ABC - p_IOI output) to the receiver's input at
    every position, with the token embeddings at e_ABC + alpha (e_IOI - e_ABC): central
    differences, no autograd."""
    L = model.cfg.n_layers
    delta = _sender_delta(model, ioi, abc, sender)
    e_ioi = _record(model, ioi.tokens, ["hook_embed"])["hook_embed"]
    e_abc = _record(model, abc.tokens, ["hook_embed"])["hook_embed"]
    emb = e_abc + alpha * (e_ioi - e_abc)
    if receiver == "logits":
        name, head = f"blocks.{L - 1}.hook_resid_post", None
    elif receiver.startswith("m"):
        name, head = f"blocks.{int(receiver[1:])}.hook_mlp_in", None
    else:
        l, h = map(int, receiver[1:-3].split(".h"))
        name, head = f"blocks.{l}.attn.hook_{receiver[-2]}_input", h

    def run(t):
        def add(x, hook):
            x = x.clone()
            if head is None:
                x += t * delta
            else:
                x[:, :, head] += t * delta
            return x

        return _plain_hooks(model, ioi, [("hook_embed", lambda x, hook: emb.clone()), (name, add)])

    saved = model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    try:
        return (run(eps) - run(-eps)) / (2 * eps)
    finally:
        model.set_use_split_qkv_input(saved[0])
        model.set_use_hook_mlp_in(saved[1])


def _plain_hooks(model, ds, fwd):
    with torch.no_grad():
        return metrics.logit_diff(model.run_with_hooks(ds.tokens, fwd_hooks=fwd), ds).mean().item()


PICKS = [("input", "a0.h2<q>"), ("a0.h1", "a2.h3<k>"), ("m0", "a1.h0<v>"),
         ("a1.h2", "m1"), ("input", "m0"), ("m2", "logits"), ("a2.h1", "logits")]


def test_eap_equals_finite_difference_on_the_edge():
    model = double_model()
    ioi, abc = datasets(6)
    scores = E.eap_scores(model, ioi, abc, batch_size=4)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    for snd, rcv in PICKS:
        got = float(scores[E.sender_index(H, snd), E.receiver_index(L, H, rcv)])
        assert got == pytest.approx(_fd_on_edge(model, ioi, abc, snd, rcv), rel=1e-4, abs=1e-7), (snd, rcv)


def test_eap_ig_is_a_riemann_sum_of_the_gradient_on_the_input_path():
    model = double_model()
    ioi, abc = datasets(6)
    steps = 3
    scores = E.eap_ig_scores(model, ioi, abc, steps=steps)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    for snd, rcv in PICKS[1:4] + PICKS[5:6]:
        riemann = sum(_fd_on_edge(model, ioi, abc, snd, rcv, alpha=k / steps) for k in range(1, steps + 1)) / steps
        got = float(scores[E.sender_index(H, snd), E.receiver_index(L, H, rcv)])
        assert got == pytest.approx(riemann, rel=1e-4, abs=1e-7), (snd, rcv)


def test_eap_ig_with_one_step_is_eap_and_bad_steps_are_refused():
    model = random_model()
    ioi, abc = datasets(4)
    assert torch.equal(E.eap_ig_scores(model, ioi, abc, steps=1), E.eap_scores(model, ioi, abc))
    per = E.eap_scores(model, ioi, abc, per_prompt=True, batch_size=3)
    assert per.shape[0] == 4
    assert torch.allclose(per.mean(0), E.eap_scores(model, ioi, abc), atol=1e-6)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="steps"):
            E.eap_ig_scores(model, ioi, abc, steps=bad)


# ----------------------------------------------------------------------------- baselines, nodes


def test_random_scores_are_seeded_and_only_on_edges():
    g = E.edge_graph(3, 4)
    a, b, c = E.random_scores(g, 1), E.random_scores(g, 1), E.random_scores(g, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[~g.mask] == 0).all() and (a[g.mask] != 0).all()


def test_head_scores_by_hand():
    g = E.edge_graph(2, 2)
    s = torch.zeros(g.mask.shape)

    def put(snd, rcv, v):
        s[E.sender_index(2, snd), E.receiver_index(2, 2, rcv)] = v

    put("input", "a0.h0<q>", 0.5)   # into 0.0
    put("input", "a0.h0<v>", -0.25)  # into 0.0
    put("a0.h0", "a1.h1<k>", -2.0)   # out of 0.0, into 1.1
    put("a0.h0", "logits", 1.0)      # out of 0.0
    put("a1.h1", "m1", 0.75)         # out of 1.1
    put("m0", "a1.h0<q>", 3.0)       # into 1.0
    mx, sm = E.head_scores(g, s, "max"), E.head_scores(g, s, "sum")
    assert mx.tolist() == [[2.0, 0.0], [3.0, 2.0]]
    assert sm.tolist() == [[0.5 + 0.25 + 2.0 + 1.0, 0.0], [3.0, 2.0 + 0.75]]
    # a batch of scorings (bootstrap resamples) at once: each the head scores of its own
    batch = torch.stack([s, -2 * s, s.flip(0)])
    for how in ("max", "sum"):
        assert torch.equal(E.head_scores(g, batch, how),
                           torch.stack([E.head_scores(g, b, how) for b in batch]))


def test_top_edges_by_hand():
    g = E.edge_graph(1, 1)  # input->a0.h0<q,k,v>, input->m0, a0.h0->m0, input/a0.h0/m0->logits: 8
    s = torch.zeros(g.mask.shape)
    names = g.edge_names()
    vals = {"input->a0.h0<k>": -5.0, "a0.h0->m0": 4.0, "m0->logits": 4.0, "input->logits": 1.0}
    for (si, ri), name in zip(g.mask.nonzero().tolist(), names):
        s[si, ri] = vals.get(name, 0.0)
    pick = lambda keep: {n for (si, ri), n in zip(g.mask.nonzero().tolist(), names) if keep[si, ri]}
    assert pick(E.top_edges(g, s, 1)) == {"input->a0.h0<k>"}
    assert pick(E.top_edges(g, s, 3)) == {"input->a0.h0<k>", "a0.h0->m0", "m0->logits"}
    assert pick(E.top_edges(g, s, 2, absolute=False)) == {"a0.h0->m0", "m0->logits"}
    assert int(E.top_edges(g, s, g.n_edges).sum()) == 8 == g.n_edges
