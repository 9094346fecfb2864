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
