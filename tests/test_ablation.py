"""Knockouts and the circuit criteria against independent computations: a per-prompt
hand-written loop (one forward per prompt, group means summed by hand) and the run on the
mean attention outputs."""

from __future__ import annotations

import itertools

import pytest
import torch

import tiny_models as tm
from ioi_helpers import ablation, metrics, paper

TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup():
    model = tm.random_model()
    ds, abc = tm.datasets(12, seed=5)
    return model, ds, abc, ablation.ablation_values(model, ds, abc, "mean")


def hand_logit_diff(model, ds, abc, keep):
    """Per prompt, by hand: mean head outputs of its template group over p_ABC (summed in a
    loop), then a forward of that prompt alone with z replaced wherever ``keep(l, h, p, i)``
    is False."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    means = {}
    out = []
    for i in range(len(ds)):
        g, n = ds.groups[i], int(ds.lengths[i])
        if g not in means:
            members = [j for j in range(len(abc)) if abc.groups[j] == g]
            total = None
            for j in members:
                _, cache = model.run_with_cache(abc.tokens[j:j + 1, :n])
                z = torch.stack([cache[f"blocks.{l}.attn.hook_z"][0] for l in range(n_layers)])
                total = z if total is None else total + z
            means[g] = total / len(members)

        def hook(z, hook, i=i, g=g):
            l = int(hook.name.split(".")[1])
            z = z.clone()
            for p in range(z.shape[1]):
                for h in range(n_heads):
                    if not keep(l, h, p, i):
                        z[0, p, h] = means[g][l, p, h]
            return z

        with torch.no_grad():
            logits = model.run_with_hooks(ds.tokens[i:i + 1, :n],
                                          fwd_hooks=[(f"blocks.{l}.attn.hook_z", hook) for l in range(n_layers)])
        out.append(logits[0, n - 1, ds.io_tokens[i]] - logits[0, n - 1, ds.s_tokens[i]])
    return torch.stack(out)


def keep_circuit(ds, circuit, removed=()):
    def keep(l, h, p, i):
        if (l, h) not in circuit or (l, h) in removed:
            return False
        kept = circuit[(l, h)]
        return kept is None or any(int(ds.pos[name][i]) == p for name in kept)
    return keep


CIRCUIT = {(2, 1): ["END"], (2, 3): ["END"], (1, 0): ["S2"], (1, 2): ["S2", "END"],
           (0, 3): ["S1+1"], (0, 1): None}


def test_nothing_ablated_is_the_clean_run(setup):
    model, ds, abc, values = setup
    none = ablation.knockout_mask(model, ds, [])
    got = ablation.run_ablated(model, ds, none, values)
    with torch.no_grad():
        ref = metrics.at_end(model(ds.tokens), ds)
    assert torch.allclose(got, ref, atol=1e-5)


def test_everything_ablated_is_the_run_on_mean_attention_outputs(setup):
    """All heads everywhere -> each attention layer outputs its p_ABC group mean (z -> out is
    linear): computed here from hook_attn_out, independently of hook_z and of the module."""
    model, ds, abc, values = setup
    every = ~ablation.knockout_mask(model, ds, [])
    got = metrics.logit_diff(ablation.run_ablated(model, ds, every, values), ds)
    _, cache = model.run_with_cache(abc.tokens)
    ref = []
    for i in range(len(ds)):
        n = int(ds.lengths[i])
        members = [j for j in range(len(abc)) if abc.groups[j] == ds.groups[i]]
        mean_out = {l: cache[f"blocks.{l}.hook_attn_out"][members, :n].mean(0) for l in range(3)}
        hooks = [(f"blocks.{l}.hook_attn_out", lambda x, hook, m=mean_out[l]: m[None].expand_as(x))
                 for l in range(3)]
        with torch.no_grad():
            logits = model.run_with_hooks(ds.tokens[i:i + 1, :n], fwd_hooks=hooks)
        ref.append(logits[0, n - 1, ds.io_tokens[i]] - logits[0, n - 1, ds.s_tokens[i]])
    assert (got - torch.stack(ref)).abs().max().item() < TOL


def test_full_circuit_is_the_model(setup):
    model, ds, abc, values = setup
    everything = {(l, h): None for l in range(3) for h in range(4)}
    f = ablation.faithfulness(model, ds, values, everything)
    assert f.F_C == f.F_M and f.ratio == 1.0 and f.gap == 0.0
    clean = metrics.logit_diff(model(ds.tokens), ds)
    assert torch.allclose(f.model_ld, clean, atol=1e-5)


def test_circuit_run_matches_hand_loop(setup):
    model, ds, abc, values = setup
    got = ablation.circuit_logit_diff(model, ds, values, CIRCUIT)
    ref = hand_logit_diff(model, ds, abc, keep_circuit(ds, CIRCUIT))
    assert (got - ref).abs().max().item() < TOL
    assert (got - metrics.logit_diff(model(ds.tokens), ds)).abs().max() > 10 * TOL  # non-vacuous
    f = ablation.faithfulness(model, ds, values, CIRCUIT)
    assert abs(f.F_C - ref.mean().item()) < TOL
    assert abs(f.ratio - f.F_C / f.F_M) < 1e-12
    assert set(f.summary()) >= {"F(M)", "F(C)", "F(C)/F(M)", "std F(C) per prompt"}


def test_knockout_at_positions_matches_hand_loop(setup):
    model, ds, abc, values = setup
    spec = {(1, 2): ["S2"], (2, 0): ["END", "IO"], (0, 0): None}
    got = ablation.ablated_logit_diff(model, ds, ablation.knockout_mask(model, ds, spec), values)

    def keep(l, h, p, i):
        if (l, h) not in spec:
            return True
        where = spec[(l, h)]
        return where is not None and all(int(ds.pos[n][i]) != p for n in where)

    assert (got - hand_logit_diff(model, ds, abc, keep)).abs().max().item() < TOL


def test_completeness_and_minimality_match_hand_loop(setup):
    model, ds, abc, values = setup
    k = ((2, 1), (1, 0))
    rows = ablation.completeness(model, ds, values, CIRCUIT, {"K": k, "empty": ()}, progress=False)
    c_k = hand_logit_diff(model, ds, abc, keep_circuit(ds, CIRCUIT, k)).mean().item()
    # default: K leaves M only at its kept positions (the authors' completeness.py)
    m_k = hand_logit_diff(model, ds, abc, lambda l, h, p, i: (l, h) not in k or all(
        int(ds.pos[n][i]) != p for n in CIRCUIT[(l, h)])).mean().item()
    assert abs(rows[0]["F(C\\K)"] - c_k) < TOL and abs(rows[0]["F(M\\K)"] - m_k) < TOL
    assert abs(rows[0]["score"] - abs(c_k - m_k)) < TOL
    # the variant: K removed from M at every position
    every = ablation.completeness(model, ds, values, CIRCUIT, {"K": k}, k_positions="all", progress=False)
    m_all = hand_logit_diff(model, ds, abc, lambda l, h, p, i: (l, h) not in k).mean().item()
    assert abs(every[0]["F(M\\K)"] - m_all) < TOL and abs(every[0]["F(C\\K)"] - c_k) < TOL
    assert abs(m_all - m_k) > 10 * TOL  # the two constructions differ here
    f = ablation.faithfulness(model, ds, values, CIRCUIT)
    assert abs(rows[1]["score"] - abs(f.F_C - f.F_M)) < TOL

    mini = ablation.minimality(model, ds, values, CIRCUIT, {(1, 2): [(2, 3)]}, progress=False)
    without_k = hand_logit_diff(model, ds, abc, keep_circuit(ds, CIRCUIT, [(2, 3)])).mean().item()
    without_kv = hand_logit_diff(model, ds, abc, keep_circuit(ds, CIRCUIT, [(2, 3), (1, 2)])).mean().item()
    assert abs(mini[(1, 2)]["score"] - abs(without_kv - without_k)) < TOL
    assert abs(mini[(1, 2)]["relative"] - mini[(1, 2)]["score"] / abs(f.F_M)) < 1e-6
    assert mini[(0, 3)]["K"] == ()


def test_model_minus_k_at_kept_positions_only(setup):
    model, ds, abc, values = setup
    k = [(1, 2), (0, 3)]
    got = ablation.model_logit_diff(model, ds, values, k, CIRCUIT, k_positions="kept")

    def keep(l, h, p, i):
        return (l, h) not in k or all(int(ds.pos[n][i]) != p for n in CIRCUIT[(l, h)])

    assert (got - hand_logit_diff(model, ds, abc, keep)).abs().max().item() < TOL


def test_resample_and_zero_values(setup):
    model, ds, abc, _ = setup
    z_abc = ablation.head_outputs(model, abc)
    res = ablation.ablation_values(model, ds, abc, "resample", seed=1)
    for i in range(len(ds)):
        n = int(ds.lengths[i])
        same = [j for j in range(len(abc)) if abc.groups[j] == ds.groups[i] and j != i]
        same = same or [i]
        assert any(torch.equal(res[:, i, :n], z_abc[:, j, :n]) for j in same)
    assert torch.equal(res, ablation.ablation_values(model, ds, abc, "resample", seed=1))
    zero = ablation.ablation_values(model, ds, abc, "zero")
    assert not zero.any()
    mask = ablation.knockout_mask(model, ds, [(1, 1)])

    def kill(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with torch.no_grad():
        ref = model.run_with_hooks(ds.tokens, fwd_hooks=[("blocks.1.attn.hook_z", kill)])
    assert torch.allclose(ablation.run_ablated(model, ds, mask, zero), metrics.at_end(ref, ds), atol=1e-5)


def test_mean_values_are_group_means(setup):
    model, ds, abc, values = setup
    z_abc = ablation.head_outputs(model, abc)
    g = ds.groups[0]
    members = [j for j in range(len(abc)) if abc.groups[j] == g]
    n = int(ds.lengths[0])
    assert torch.allclose(values[:, 0, :n], z_abc[:, members, :n].mean(1), atol=1e-6)


def test_greedy_completeness_is_reproducible_and_consistent(setup):
    model, ds, abc, values = setup
    run1 = ablation.greedy_completeness(model, ds, values, CIRCUIT, n_sets=1, n_steps=2,
                                        candidates=2, seed=3, progress=False)
    run2 = ablation.greedy_completeness(model, ds, values, CIRCUIT, n_sets=1, n_steps=2,
                                        candidates=2, seed=3, progress=False)
    assert run1[0]["K"] == run2[0]["K"] and run1[0]["score"] == run2[0]["score"]
    rows = ablation.completeness(model, ds, values, CIRCUIT, {"found": run1[0]["K"], "empty": ()},
                                 progress=False)
    assert abs(rows[0]["score"] - run1[0]["score"]) < 1e-9
    assert run1[0]["score"] >= rows[1]["score"]


def test_greedy_search_is_the_authors_objective_and_parameters(setup):
    """With every head a candidate, each greedy step is the brute-force best single addition
    by |F(C\\K) - F(M\\K)| (M minus K at kept positions), scored on the same prompts; the
    defaults are the authors' new_greedy_search(no_runs=10, no_iters=10, no_samples=10)."""
    import inspect

    model, ds, abc, values = setup
    runs = ablation.greedy_completeness(model, ds, values, CIRCUIT, n_sets=1, n_steps=2,
                                        candidates=len(CIRCUIT), progress=False)
    k, best = (), None
    for _ in range(2):
        pool = [h for h in sorted(CIRCUIT) if h not in k]
        cands = {h: k + (h,) for h in pool}
        rows = ablation.completeness(model, ds, values, CIRCUIT, {"now": k, **cands}, progress=False)
        now = rows[0]["score"]
        top = max(rows[1:], key=lambda r: r["score"])
        if top["score"] > now:
            k, best = top["K"], top
    assert runs[0]["K"] == k and k  # the search moved, to the brute-force optimum
    assert abs(runs[0]["score"] - best["score"]) < 1e-9
    assert abs(runs[0]["F(C\\K)"] - best["F(C\\K)"]) < 1e-9 and abs(runs[0]["F(M\\K)"] - best["F(M\\K)"]) < 1e-9
    defaults = {n: p.default for n, p in inspect.signature(ablation.greedy_completeness).parameters.items()}
    assert (defaults["n_sets"], defaults["n_steps"], defaults["candidates"], defaults["k_positions"]) == (
        10, 10, 10, "kept")
    assert paper.GREEDY["candidates_naive"] == 5
    assert inspect.signature(ablation.random_sets).parameters["n_sets"].default == 100


def test_set_builders_and_paper_minimality_sets():
    sets = ablation.random_sets(CIRCUIT, n_sets=4, seed=0)
    assert len(sets) == 4 and all(set(k) <= set(CIRCUIT) for k in sets.values())
    assert sets == ablation.random_sets(CIRCUIT, n_sets=4, seed=0)
    classes = {"a": [(2, 1), (2, 3), (9, 9)], "b": [(1, 0)]}
    assert ablation.class_sets(classes, CIRCUIT) == {"empty": (), "a": ((2, 1), (2, 3)), "b": ((1, 0),)}
    assert ablation.same_class_k(classes)[(2, 3)] == ((2, 1), (9, 9))
    paper_heads = {h for heads in paper.CIRCUIT.values() for h in heads}
    for sets in paper.MINIMALITY_K.values():
        assert set(sets) == paper_heads
        assert all(set(k) <= paper_heads and v not in k for v, k in sets.items())


def test_minimality_k_sets_are_the_authors():
    """minimality.py, read by hand: Name Movers (backups included) get the heads before them in
    9.9, 10.0, 9.6, 10.10, 10.6, 10.2, 10.1, 11.2, 9.7; 9.0 and 11.9 all eleven name movers and
    10.7, 11.10 (minus themselves); 5.8 and 5.9 get 11.10 and 10.7; the rest their class."""
    code = paper.MINIMALITY_K["code"]
    order = [(9, 9), (10, 0), (9, 6), (10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7)]
    for i, v in enumerate(order):
        assert set(code[v]) == set(order[:i]), v
    eleven = set(order) | {(9, 0), (11, 9)}
    for v in [(9, 0), (11, 9)]:
        assert set(code[v]) == (eleven | {(10, 7), (11, 10)}) - {v}
    assert set(code[(5, 8)]) == set(code[(5, 9)]) == {(11, 10), (10, 7)}
    assert set(code[(5, 5)]) == {(5, 8), (5, 9), (6, 9)} and set(code[(2, 2)]) == {(4, 11)}
    assert set(code[(7, 3)]) == {(7, 9), (8, 6), (8, 10)} and set(code[(10, 7)]) == {(11, 10)}
    assert ablation.PAPER_MINIMALITY_K is code
    diff = {v for v in code if set(code[v]) != set(paper.MINIMALITY_K["arena"][v])}
    assert diff == {(11, 2), (10, 6), (10, 10), (10, 2), (9, 7), (10, 1), (9, 0), (11, 9)}
    # the generic form of the authors' rule, on a discovered circuit
    gen = ablation.ordered_class_k({"Name Mover": [(3, 1), (3, 0), (2, 2)], "x": [(1, 0), (1, 1)]})
    assert gen[(3, 1)] == () and gen[(2, 2)] == ((3, 1), (3, 0)) and gen[(1, 1)] == ((1, 0),)


def test_authors_class_grouping_and_naive_circuit():
    folded = ablation.fold_backups(paper.CIRCUIT)
    assert list(folded) == ["Name Mover", "Negative Name Mover", "S-Inhibition", "Induction",
                            "Duplicate Token", "Previous Token"]
    assert set(folded["Name Mover"]) == set(paper.CODE_CIRCUIT["Name Mover"])
    assert {k: set(v) for k, v in folded.items()} == {k: set(v) for k, v in paper.CODE_CIRCUIT.items()}
    assert sum(len(v) for v in paper.NAIVE_CIRCUIT.values()) == 13
    assert set(paper.NAIVE_CIRCUIT["Induction"]) == {(5, 5), (5, 9)}
    assert set(paper.NAIVE_CIRCUIT["Duplicate Token"]) == {(3, 0), (0, 10)}


def test_circuit_run_on_ioi_tiny_matches_hand_loop():
    model = tm.ioi_tiny()
    ds, abc = tm.datasets(6, seed=8)
    circuit = {(3, 0): ["END"], (2, 5): ["END"], (1, 3): ["S2"], (0, 6): ["S1+1", "S2"]}
    values = ablation.ablation_values(model, ds, abc)
    got = ablation.circuit_logit_diff(model, ds, values, circuit)
    ref = hand_logit_diff(model, ds, abc, keep_circuit(ds, circuit))
    assert (got - ref).abs().max().item() < TOL


# ----------------------------------------------------------------------------- batched runs


def sequential_greedy(model, ds, values, circuit, n_sets, n_steps, candidates, seed, k_positions="kept"):
    """The greedy search as written before the batched runs: every K scored alone, C \\ K and
    M \\ K each by its own forward (circuit_logit_diff, model_logit_diff)."""
    import random

    rng = random.Random(seed)
    memo = {}

    def score(k):
        key = frozenset(k)
        if key not in memo:
            c = ablation.circuit_logit_diff(model, ds, values, circuit, k).mean().item()
            m = ablation.model_logit_diff(model, ds, values, k, circuit, k_positions).mean().item()
            memo[key] = abs(c - m)
        return memo[key]

    out = []
    for _ in range(n_sets):
        k, best, trajectory = (), score(()), []
        for _ in range(n_steps):
            pool = sorted(h for h in circuit if h not in k)
            if not pool:
                break
            tried = rng.sample(pool, min(candidates, len(pool)))
            scores = [score(k + (h,)) for h in tried]
            i = max(range(len(tried)), key=scores.__getitem__)
            if scores[i] > best:
                k, best = k + (tried[i],), scores[i]
                trajectory.append((k, best))
        out.append((k, best, trajectory))
    return out


def test_batched_logit_diffs_equal_one_at_a_time(setup):
    """Many masks in shared forwards (chunked by prompts and by rows, so that a forward holds
    several masks and the prompts are split) give each mask's own run."""
    model, ds, abc, values = setup
    gen = torch.Generator().manual_seed(0)
    masks = [ablation.knockout_mask(model, ds, []), ablation.circuit_mask(model, ds, CIRCUIT),
             ablation.circuit_mask(model, ds, CIRCUIT, [(1, 2)]),
             ablation.model_mask(model, ds, [(1, 2), (0, 3)], CIRCUIT, "kept")]
    masks += [torch.rand(masks[0].shape, generator=gen) < 0.3 for _ in range(3)]
    ref = torch.stack([ablation.ablated_logit_diff(model, ds, m, values) for m in masks])
    assert ref.std(dim=0).max() > 10 * TOL  # the masks give different runs
    assert len(set(ds.lengths.tolist())) > 1  # padded and by-length forwards differ
    for (batch_size, max_rows), by_length in itertools.product(((100, 1000), (5, 12), (12, 1)), (True, False)):
        got = ablation.ablated_logit_diffs(model, ds, masks, values, batch_size=batch_size, max_rows=max_rows,
                                           by_length=by_length)
        assert got.shape == (len(masks), len(ds))
        assert (got - ref).abs().max().item() < 1e-5
    got = ablation.ablated_logit_diffs(model, ds, torch.stack(masks), values)  # a stacked tensor works too
    assert (got - ref).abs().max().item() < 1e-5
    with pytest.raises(ValueError):
        ablation.ablated_logit_diffs(model, ds, [masks[0][:, :3]], values)


def test_batched_completeness_and_greedy_equal_sequential(setup):
    """The batched completeness and greedy search give the sequential code's numbers and, for
    the same seed, the same K, trajectory and scores."""
    model, ds, abc, values = setup
    sets = ablation.random_sets(CIRCUIT, n_sets=6, seed=2)
    rows = ablation.completeness(model, ds, values, CIRCUIT, sets, progress=False, max_rows=30)
    for row, k in zip(rows, sets.values()):
        c = ablation.circuit_logit_diff(model, ds, values, CIRCUIT, k)
        m = ablation.model_logit_diff(model, ds, values, k, CIRCUIT, "kept")
        assert (row["per prompt"][0] - c).abs().max() < 1e-5 and (row["per prompt"][1] - m).abs().max() < 1e-5
    for seed in (0, 1, 4):
        got = ablation.greedy_completeness(model, ds, values, CIRCUIT, n_sets=3, n_steps=3, candidates=3,
                                           seed=seed, progress=False)
        ref = sequential_greedy(model, ds, values, CIRCUIT, 3, 3, 3, seed)
        assert [r["K"] for r in got] == [k for k, _, _ in ref]
        assert any(r["K"] for r in got)  # the search moved
        for r, (k, best, trajectory) in zip(got, ref):
            assert abs(r["score"] - best) < 1e-5
            assert [t[0] for t in r["trajectory"]] == [t[0] for t in trajectory]
