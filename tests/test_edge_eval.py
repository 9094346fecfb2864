"""Chapter 9's edge-level scoring (ioi_helpers.edge_eval), each number against an independent
computation: AUCs by a brute-force pair count, CPR / CMD by hand from the curve, circuit edges
by enumeration, ACDC edge scores from the walk's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ioi_helpers import edge_eval as EV
from ioi_helpers import edges as E
from ioi_helpers import faithfulness as F

from tiny_models import datasets, random_model


def _pair_auc(scores, labels):
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    return ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()


def test_circuit_edges_by_enumeration():
    g = E.edge_graph(3, 2)
    m = EV.circuit_edges(g, [(0, 1), (2, 0)])
    names = {n for n, k in zip(g.edge_names(), m[g.mask].tolist()) if k}
    assert names == {"input->a0.h1<q>", "input->a0.h1<k>", "input->a0.h1<v>",
                     "input->a2.h0<q>", "input->a2.h0<k>", "input->a2.h0<v>",
                     "a0.h1->a2.h0<q>", "a0.h1->a2.h0<k>", "a0.h1->a2.h0<v>",
                     "input->logits", "a0.h1->logits", "a2.h0->logits"}


def test_acdc_edge_scores_take_the_largest_position():
    g = E.edge_graph(3, 2)
    rows = pd.DataFrame([("1.0", "logits", "logits", "END", -0.4),
                         ("0.1", "1.0", "k", "END", 0.1), ("0.1", "1.0", "k", "S2", -0.3)],
                        columns=["sender", "receiver", "input", "position", "score"])
    s = EV.acdc_edge_scores(g, rows)
    assert s[E.sender_index(2, "a1.h0"), E.receiver_index(3, 2, "logits")] == pytest.approx(0.4)
    assert s[E.sender_index(2, "a0.h1"), E.receiver_index(3, 2, "a1.h0<k>")] == pytest.approx(0.3)
    assert int((s != 0).sum()) == 2


def test_evaluate_against_independent_computations():
    model = random_model()
    ioi, abc = datasets(6)
    g = E.graph_of(model)
    pp = E.eap_scores(model, ioi, abc, per_prompt=True)
    heads = [(0, 1), (1, 2)]
    emask = EV.circuit_edges(g, heads)
    table, curves = EV.evaluate(model, ioi, abc, {"EAP": pp.mean(0), "random": E.random_scores(g)},
                                {"EAP": pp}, {"ref": heads}, {"edges": emask}, n_boot=50)
    t = table.set_index("method")
    for name, sc in (("EAP", pp.mean(0)), ("random", E.random_scores(g))):
        hs = E.head_scores(g, sc)
        y = torch.zeros_like(hs, dtype=torch.bool)
        for l, h in heads:
            y[l, h] = True
        assert t.loc[name, "node AUC (ref)"] == pytest.approx(_pair_auc(hs.flatten(), y.flatten()))
        assert t.loc[name, "edge AUC (edges)"] == pytest.approx(
            _pair_auc(sc.abs()[g.mask], emask[g.mask]))
        c = curves[name]
        x = [p / 100 for p in F.MIB_PERCENTAGES]
        f = c.faithfulness
        by_hand = sum((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(9))
        assert t.loc[name, "CPR"] == pytest.approx(by_hand)
        assert t.loc[name, "CMD"] == pytest.approx(
            sum((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(9)))
        assert t.loc[name, "CPR lo"] <= t.loc[name, "CPR"] + 1e-9 or np.isnan(t.loc[name, "CPR lo"])
    assert np.isnan(t.loc["random", "node AUC (ref) lo"])  # no per-prompt scores, no interval
    lo, hi = t.loc["EAP", "node AUC (ref) lo"], t.loc["EAP", "node AUC (ref) hi"]
    assert 0 <= lo <= hi <= 1
    # a fixed circuit on the same axes: every edge is the model (faithfulness 1)
    pt = EV.circuit_point(model, ioi, abc, g.mask, curves["EAP"])
    assert pt["fraction"] == 1 and pt["faithfulness"] == pytest.approx(1.0, abs=1e-4)


def test_with_intervals_and_keys():
    t = pd.DataFrame({"method": ["EAP-IG"], "CPR": [0.5], "CPR lo": [0.4], "CPR hi": [0.6],
                      "AUC": [0.7], "AUC lo": [np.nan], "AUC hi": [np.nan]})
    out = EV.with_intervals(t, 2)
    assert out.loc[0, "CPR"] == "0.50 [0.40, 0.60]" and out.loc[0, "AUC"] == "0.70"
    assert EV.key("EAP-IG") == "eap_ig" and EV.key("node AUC (planted)") == "node_auc_planted"


def test_bad_prompt_count_refused_in_one_line():
    with pytest.raises(ValueError, match="int >= 2 prompts"):
        EV.prompts(random_model(), 1, 0, "mixed", False)


def test_with_intervals_shows_a_missing_value_as_na():
    t = pd.DataFrame({"method": ["attr"], "AUC": [np.nan], "AUC lo": [np.nan], "AUC hi": [np.nan]})
    assert EV.with_intervals(t).loc[0, "AUC"] == "n/a"


def test_edge_references_planted_truth_and_head_circuits():
    from ioi_helpers import truth

    model = random_model()
    g = E.graph_of(model)
    refs = {"manual": {"Name Mover": [(2, 1)], "S-Inhibition": [(1, 0), (1, 0)]}}
    node, edge, how = EV.edge_references(model, refs)
    assert node == {"manual": [(1, 0), (2, 1)]}
    assert torch.equal(edge["manual"], EV.circuit_edges(g, [(1, 0), (2, 1)]))
    assert how == {"manual": "edges between its heads"}
    # a "planted" reference on a model that is not ioi-planted: its heads' edges, not a truth
    node, edge, how = EV.edge_references(model, {"planted": {"Name Mover": [(2, 1)]}})
    assert how["planted"] == "edges between its heads"
    # on ioi-planted: the planted edge truth itself
    from ioi_helpers import models

    planted = models.load_model("ioi-planted")
    node, edge, how = EV.edge_references(planted, {"planted": planted.planted})
    assert how["planted"] == "planted edge truth"
    assert torch.equal(edge["planted"], truth.planted_edge_mask(planted))


def test_score_methods_are_eap_eap_ig_and_random():
    model = random_model()
    ioi, abc = datasets(4)
    g = E.graph_of(model)
    scores, pp, secs = EV.score_methods(model, ioi, abc, steps=2, seed=3)
    assert list(scores) == ["EAP", "EAP-IG", "random"] and set(pp) == {"EAP", "EAP-IG"}
    assert torch.allclose(scores["EAP"], E.eap_scores(model, ioi, abc), atol=1e-5)
    assert torch.allclose(scores["EAP-IG"], E.eap_ig_scores(model, ioi, abc, steps=2), atol=1e-5)
    assert torch.equal(scores["random"], E.random_scores(g, 3))
    assert torch.allclose(pp["EAP"].mean(0), scores["EAP"]) and all(s >= 0 for s in secs.values())
    scores, pp, _ = EV.score_methods(model, ioi, abc, ig=False)
    assert list(scores) == ["EAP", "random"]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        EV.score_methods(model, ioi, abc, steps=0)


def test_add_node_method_by_pairs():
    t = pd.DataFrame({"method": ["EAP"], "node AUC (ref)": [0.9], "node AUC (ref) lo": [0.8],
                      "node AUC (ref) hi": [1.0], "CPR": [0.5], "CPR lo": [0.4], "CPR hi": [0.6]})
    heads = torch.tensor([[0.1, 0.9], [0.5, 0.2]])
    out = EV.add_node_method(t, "attribution", heads, {"ref": [(0, 1), (1, 1)]})
    assert list(out.columns) == list(t.columns) and len(t) == 1
    row = out.set_index("method").loc["attribution"]
    y = np.array([False, True, False, True])
    assert row["node AUC (ref)"] == pytest.approx(_pair_auc(heads.flatten(), y))
    assert np.isnan(row["CPR"]) and np.isnan(row["node AUC (ref) lo"])


def test_stability_by_hand():
    g = E.edge_graph(2, 2)
    a = E.random_scores(g, 0)
    b = a.clone()
    idx = g.mask.nonzero()
    top = E.top_edges(g, a, 2)
    (s0, r0) = top.nonzero()[0].tolist()
    b[s0, r0] = 0.0  # one of a's top two edges drops out of b's top two
    t = EV.stability(g, {"m": (a, b), "same": (a, a)}, percentages=(100, 0.1))
    cols = list(t.columns)
    assert cols == ["method", f"top 100% ({g.n_edges} edges)", "top 0.1% (1 edges)"]
    t = t.set_index("method")
    assert t.loc["same"].tolist() == [1.0, 1.0]
    assert t.loc["m", cols[1]] == 1.0
    t2 = EV.stability(g, {"m": (a, b)}, percentages=(100 * 2 / g.n_edges,)).set_index("method")
    assert t2.iloc[0, 0] == pytest.approx(1 / 3)  # |A & B| = 1, |A | B| = 3
    del idx


def test_export_mib_round_trip(tmp_path):
    g = E.edge_graph(2, 2)
    sc = {"EAP-IG": E.random_scores(g, 1)}
    paths = EV.export_mib(tmp_path / "mib", g, sc, 16, "m")
    assert paths == {"EAP-IG": str(tmp_path / "mib" / "m.eap_ig.json")}
    g2, s2, _ = F.read_mib_json(paths["EAP-IG"])
    assert g2 == g and torch.allclose(s2, sc["EAP-IG"])


def test_half_scores_score_each_half_and_random_twice():
    model = random_model()
    ioi, abc = datasets(6)
    g = E.graph_of(model)
    h = E.disjoint_halves(6, 0)
    out = EV.half_scores(model, ioi, abc, h, steps=2, seed=5)
    assert set(out) == {"EAP", "EAP-IG", "random"}
    assert torch.allclose(out["EAP"][1], E.eap_scores(model, ioi[h[1]], abc[h[1]]), atol=1e-5)
    assert torch.allclose(out["EAP-IG"][0], E.eap_ig_scores(model, ioi[h[0]], abc[h[0]], 2),
                          atol=1e-5)
    assert torch.equal(out["random"][0], E.random_scores(g, 5))
    assert torch.equal(out["random"][1], E.random_scores(g, 6))


def test_negative_control_evaluates_against_the_paper_heads_in_its_shape():
    from ioi_helpers import paper

    model = random_model()
    ctrl = EV.negative_control(model, 4, steps=2, n_boot=5, control_model=random_model(seed=1))
    g = E.graph_of(ctrl.model)
    heads = sorted({tuple(h) for hs in paper.CIRCUIT.values() for h in hs if h[0] < 3 and h[1] < 4})
    assert heads and torch.equal(ctrl.edge_refs["paper heads"], EV.circuit_edges(g, heads))
    t = ctrl.table.set_index("method")
    assert list(t.index) == ["EAP", "EAP-IG", "random"] and ctrl.n_prompts == 4
    assert t.loc["EAP", "node AUC (paper heads)"] == pytest.approx(
        EV.node_auc(g, ctrl.scores["EAP"], heads))
    assert t.loc["random", "edge AUC (paper heads)"] == pytest.approx(
        EV.edge_auc(g, E.random_scores(g, 0), ctrl.edge_refs["paper heads"]))
    assert set(ctrl.curves) == set(ctrl.scores) and ctrl.seconds["total"] > 0
    # no control of a model by itself
    assert EV.negative_control(model, 4, name="tiny-random") is None


def test_circuit_points_and_panel_frames():
    model = random_model()
    ioi, abc = datasets(4)
    g = E.graph_of(model)
    curve = F.faithfulness_curve(model, ioi, abc, E.random_scores(g), percentages=(50, 100))
    pts = EV.circuit_points(model, ioi, abc, {"manual": g.mask}, curve)
    assert pts.loc[0, "circuit"] == "hand-found" and pts.loc[0, "fraction"] == 1
    assert pts.loc[0, "faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert EV.circuit_points(model, ioi, abc, {}, curve).empty
    lines, dots = EV.panel_frames({"A": ({"r": curve}, pts)})
    assert lines["panel"].tolist() == ["A", "A"] and lines["faithfulness"].tolist() == curve.faithfulness
    assert dots["panel"].tolist() == ["A"]
    lines, dots = EV.panel_frames({"A": ({"r": curve}, None)})
    assert dots.empty and "panel" in dots


def test_chance_summary_by_hand():
    t = pd.DataFrame({"method": ["a", "b"],
                      "node AUC (r)": [0.4, 0.7], "node AUC (r) lo": [0.3, 0.6],
                      "node AUC (r) hi": [0.55, 0.8],
                      "edge AUC (r)": [0.52, np.nan], "edge AUC (r) lo": [np.nan, np.nan],
                      "edge AUC (r) hi": [np.nan, np.nan], "CPR": [9.0, -9.0],
                      "CPR lo": [0.0, 0.0], "CPR hi": [10.0, 10.0]})
    assert EV.chance_summary(t) == {"min": 0.4, "max": 0.7, "intervals": 2, "contain_half": 1}


def test_rank_auc_is_the_pair_count_with_ties():
    from ioi_helpers import roc

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(20):
        s = rng.integers(0, 5, size=40).astype(float)  # many ties
        y = rng.random(40) < 0.3
        y[0], y[1] = True, False
        assert roc.rank_auc(s, y) == pytest.approx(_pair_auc(s, y), abs=1e-12)
        assert roc.rank_auc(s, y) == pytest.approx(roc.auc(s, y), abs=1e-12)
        rows.append(s)
    # many rankings at once against one labelling: row i is rank_auc of row i
    y = rng.random(40) < 0.3
    y[0], y[1] = True, False
    many = roc.rank_auc_rows(np.stack(rows), y)
    assert many.tolist() == [roc.rank_auc(r, y) for r in rows]
    assert many == pytest.approx([_pair_auc(r, y) for r in rows], abs=1e-12)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        roc.rank_auc([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        roc.rank_auc_rows([[1.0, 2.0]], [True, True])


@pytest.mark.parametrize("interval", ["bias-corrected", "percentile"])
def test_evaluate_intervals_are_those_of_a_plain_loop_over_resamples(interval):
    """evaluate computes every interval over all bootstrap resamples at once; a plain loop
    (bootstrap_ci with one resample per call, the AUC of each resample's mean scores, the CPR
    and CMD of each resampled curve) must give the same intervals, of either kind."""
    from ioi_helpers import roc

    model = random_model()
    ioi, abc = datasets(7)
    g = E.graph_of(model)
    pp = E.eap_scores(model, ioi, abc, per_prompt=True)
    heads = [(0, 1), (1, 2), (2, 0)]
    emask = EV.circuit_edges(g, heads)
    table, curves = EV.evaluate(model, ioi, abc, {"EAP": pp.mean(0)}, {"EAP": pp},
                                {"ref": heads}, {"edges": emask}, n_boot=40, seed=4,
                                interval=interval)
    t = table.set_index("method").loc["EAP"]

    def loop(stat):
        return F.bootstrap_ci(stat, len(ioi), n_boot=40, seed=4, interval=interval)

    mean = lambda idx: pp[torch.as_tensor(idx)].mean(0)  # noqa: E731
    labels = roc.labels_for((g.n_layers, g.n_heads), heads)
    want = {"node AUC (ref)": loop(lambda i: roc.auc(E.head_scores(g, mean(i)).numpy(), labels)),
            "edge AUC (edges)": loop(lambda i: _pair_auc(mean(i).abs()[g.mask], emask[g.mask])),
            "CPR": loop(lambda i: curves["EAP"].resampled(i).cpr()),
            "CMD": loop(lambda i: curves["EAP"].resampled(i).cmd())}
    for key, (est, lo, hi) in want.items():
        assert (t[key], t[key + " lo"], t[key + " hi"]) == pytest.approx((est, lo, hi), abs=1e-12), key
    assert t["CPR lo"] < t["CPR hi"] and t["node AUC (ref) lo"] <= t["node AUC (ref) hi"]


def test_resample_means_are_the_loops_means():
    pp = torch.randn(9, 5, 7)
    idx = F.bootstrap_indices(9, 37, seed=2)
    got = EV.resample_means(pp, idx, chunk=5)
    assert torch.equal(got, torch.stack([pp[torch.as_tensor(i)].mean(0) for i in idx]))


def test_half_scores_from_per_prompt_scores_are_the_halves_rerun():
    model = random_model()
    ioi, abc = datasets(6)
    g = E.graph_of(model)
    h = E.disjoint_halves(6, 0)
    pp = {"EAP": E.eap_scores(model, ioi, abc, per_prompt=True),
          "EAP-IG": E.eap_ig_scores(model, ioi, abc, 2, per_prompt=True)}
    out = EV.half_scores(model, ioi, abc, h, seed=5, per_prompt=pp)
    rerun = EV.half_scores(model, ioi, abc, h, steps=2, seed=5)
    assert list(out) == list(rerun) == ["EAP", "EAP-IG", "random"]
    for name in out:
        for a, b in zip(out[name], rerun[name]):
            assert torch.allclose(a, b, atol=1e-5), name
    assert torch.equal(out["random"][1], E.random_scores(g, 6))
