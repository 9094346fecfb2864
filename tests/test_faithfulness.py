"""Faithfulness curves, CPR / CMD, bootstrap intervals, top-k overlap and MIB export
(ioi_helpers.faithfulness), against hand calculations and plain forward passes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ioi_helpers import edges as E
from ioi_helpers import faithfulness as F
from ioi_helpers import metrics

from tiny_models import datasets, random_model


def test_cpr_and_cmd_by_hand():
    x = [0.001, 0.5, 1.0]
    # f = 0, 1, 1: under f, 0.499 x (0 + 1)/2 + 0.5 x (1 + 1)/2; under |1 - f|, 0.499 x 1/2 + 0
    assert F.cpr(x, [0, 1, 1]) == pytest.approx(0.2495 + 0.5)
    assert F.cmd(x, [0, 1, 1]) == pytest.approx(0.2495)
    # f = 2, 0, 1 (overshoot, then nothing): under f, 0.499 x 1 + 0.5 x 0.5;
    # under |1 - f| = 1, 1, 0: 0.499 x 1 + 0.5 x 0.5 (a signed 1 - f would cancel the first)
    assert F.cpr(x, [2, 0, 1]) == pytest.approx(0.499 + 0.25)
    assert F.cmd(x, [2, 0, 1]) == pytest.approx(0.499 + 0.25)
    # MIB's ten points with a perfect circuit: CPR = 1 - 0.001, CMD = 0
    fr = [p / 100 for p in F.MIB_PERCENTAGES]
    assert F.cpr(fr, [1.0] * 10) == pytest.approx(0.999)
    assert F.cmd(fr, [1.0] * 10) == 0


def test_edge_percentages_outside_range_are_refused():
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            F.n_kept(1997, bad)
    # floor(k/100 x n) by hand: 1.997 -> 1, 9.985 -> 9, 32.491 -> 32, 1997
    assert [F.n_kept(1997, 0.1), F.n_kept(1997, 0.5), F.n_kept(32491, 0.1), F.n_kept(1997, 100)] == [1, 9, 32, 1997]
    model = random_model()
    ioi, abc = datasets(2)
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        F.faithfulness_curve(model, ioi, abc, E.random_scores(E.graph_of(model)), percentages=(0.0, 50))


def _plain(model, tokens, ds):
    with torch.no_grad():
        return metrics.logit_diff(model(tokens), ds).mean().item()


def test_faithfulness_curve_on_a_tiny_model():
    model = random_model()
    ioi, abc = datasets(6)
    g = E.graph_of(model)
    scores = E.eap_scores(model, ioi, abc)
    pcts = (5, 30, 100)
    for absolute in (True, False):
        curve = F.faithfulness_curve(model, ioi, abc, scores, percentages=pcts, absolute=absolute, batch_size=4)
        clean, corrupted = _plain(model, ioi.tokens, ioi), _plain(model, abc.tokens, ioi)
        assert curve.full.mean().item() == pytest.approx(clean, rel=1e-4, abs=1e-5)
        assert curve.empty.mean().item() == pytest.approx(corrupted, rel=1e-4, abs=1e-5)
        # the kept edges, chosen here by a plain sort of the edge list
        ranked = sorted(zip(g.mask.nonzero().tolist(), scores[g.mask].tolist()),
                        key=lambda t: -abs(t[1]) if absolute else -t[1])
        for p, f, n in zip(pcts, curve.faithfulness, curve.n_edges):
            assert n == int(p * g.n_edges // 100)
            keep = torch.zeros_like(g.mask)
            for (s, r), _ in ranked[:n]:
                keep[s, r] = True
            want = (E.edge_patch(model, ioi, abc, keep) - corrupted) / (clean - corrupted)
            assert f == pytest.approx(want, rel=1e-3, abs=1e-4)
        assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)
        again = curve.resampled(range(len(ioi)))
        assert again.faithfulness == pytest.approx(curve.faithfulness)
        assert curve.cpr() == pytest.approx(F.cpr([0.05, 0.3, 1.0], curve.faithfulness))


def test_bootstrap_interval_of_a_mean():
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=400)
    est, lo, hi = F.bootstrap_ci(lambda idx: data[idx].mean(), len(data), n_boot=2000, seed=0)
    assert est == pytest.approx(data.mean())
    assert lo < est < hi
    # normal theory: half-width 1.96 sd / sqrt(n)
    half = 1.96 * data.std(ddof=1) / np.sqrt(len(data))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert F.bootstrap_ci(lambda idx: data[idx].mean(), len(data), n_boot=50, seed=5) == \
        F.bootstrap_ci(lambda idx: data[idx].mean(), len(data), n_boot=50, seed=5)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _phi_inv(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(200):  # bisection: independent of statistics.NormalDist
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _phi(mid) < p else (lo, mid)
    return (lo + hi) / 2


def test_bias_corrected_interval_by_hand():
    """Resamples 0, 1, ..., 999 and an estimate of 700: 700 resamples lie below it and one
    equals it, so p0 = 0.7005, z0 = Phi^-1(p0), and the bounds are the Phi(2 z0 -+ 1.96)
    percentiles of 0..999 (the q-th percentile of 0..999 is q/100 x 999 by linear
    interpolation)."""
    values = np.arange(1000.0)
    z0, z = _phi_inv(0.7005), _phi_inv(0.975)
    want = (_phi(2 * z0 - z) * 999, _phi(2 * z0 + z) * 999)
    got = F.bias_corrected_interval(values, 700.0)
    assert got == pytest.approx(want, abs=1e-6)
    assert got[0] > F.percentile_interval(values)[0] + 150  # moved up with the estimate
    # resamples centred on the estimate: no bias to correct, the percentile interval
    centred = np.concatenate([values, 1998 - values])  # symmetric about 999
    assert F.bias_corrected_interval(centred, 999.0) == pytest.approx(F.percentile_interval(centred))
    # an estimate above every resample: p0 clipped to 1 - 1/(2B), the bounds stay finite
    lo, hi = F.bias_corrected_interval(values, 5000.0)
    assert lo == pytest.approx(_phi(2 * _phi_inv(1 - 1 / 2000) - z) * 999, abs=1e-6) and hi <= 999
    with pytest.raises(ValueError):
        F.bias_corrected_interval(values, 1.0, level=1.0)


def test_an_unknown_interval_kind_is_refused():
    with pytest.raises(ValueError, match="percentile"):
        F.bootstrap_ci(lambda idx: float(idx.mean()), 5, n_boot=3, interval="bca")


def test_bootstrap_ci_bias_corrected_uses_the_same_resamples():
    data = np.random.default_rng(3).exponential(size=60)
    stat = lambda idx: float(np.median(data[idx]))  # noqa: E731
    est, lo, hi = F.bootstrap_ci(stat, 60, n_boot=300, seed=2, interval="bias-corrected")
    values = [stat(i) for i in F.bootstrap_indices(60, 300, seed=2)]
    assert (est, lo, hi) == (stat(np.arange(60)), *F.bias_corrected_interval(values, est))


def test_topk_jaccard_by_hand():
    g = E.edge_graph(1, 1)
    cells = g.mask.nonzero().tolist()[:3]
    a, b = torch.zeros(g.mask.shape), torch.zeros(g.mask.shape)
    for (s, r), va, vb in zip(cells, (3.0, 2.0, 1.0), (0.0, -3.0, 2.0)):
        a[s, r], b[s, r] = va, vb
    # top 2: {e0, e1} and {e1, e2}: one shared of three
    assert F.topk_jaccard(g, a, b, 2) == pytest.approx(1 / 3)
    # signed: b's top 2 are e2 (2) and e0 (0), against {e0, e1}: 1 of 3
    assert F.topk_jaccard(g, a, b, 2, absolute=False) == pytest.approx(1 / 3)
    assert F.topk_jaccard(g, a, a, 3) == 1.0


def test_mib_json_round_trip(tmp_path):
    g = E.edge_graph(3, 4)
    scores = E.random_scores(g, seed=7)
    in_graph = E.top_edges(g, scores, 10)
    path = F.write_mib_json(tmp_path / "c.json", g, scores, d_model=64, in_graph=in_graph)
    raw = json.loads(path.read_text())
    assert set(raw) == {"cfg", "nodes", "edges"}
    assert raw["cfg"] == {"n_layers": 3, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 64}
    assert len(raw["edges"]) == E.count_edges(3, 4)
    # names and scores against the edge table (sender, receiver, input columns)
    table = E.edge_table(g, scores)
    for row in table.sample(20, random_state=0).itertuples():
        suffix = f"<{row.input}>" if row.input in "qkv" else ""
        assert raw["edges"][f"{row.sender}->{row.receiver}{suffix}"]["score"] == pytest.approx(row.score)
    kept_nodes = {n for name, e in raw["edges"].items() if e["in_graph"]
                  for n in (name.split("->")[0], name.split("->")[1].split("<")[0])}
    assert {n for n, v in raw["nodes"].items() if v["in_graph"]} == kept_nodes | {"logits"}
    g2, s2, ig2 = F.read_mib_json(path)
    assert g2 is g
    assert torch.equal(s2, scores) and torch.equal(ig2, in_graph)


def test_batched_bootstrap_is_the_plain_loop():
    """bootstrap_ci with a statistic of all resamples at once draws the same resamples and
    gives the same interval as one resample per call; a curve's resampled faithfulness, CPR
    and CMD row by row are those of Curve.resampled."""
    data = np.random.default_rng(1).normal(size=23)
    plain = F.bootstrap_ci(lambda idx: data[idx].mean(), len(data), n_boot=64, seed=9)
    batched = F.bootstrap_ci(lambda idx: data[idx].mean(1), len(data), n_boot=64, seed=9,
                             batched=True)
    assert batched == plain
    idx = F.bootstrap_indices(len(data), 64, seed=9)
    rng = np.random.default_rng(9)
    assert all((row == rng.integers(0, len(data), size=len(data))).all() for row in idx)
    gen = torch.Generator().manual_seed(0)
    curve = F.Curve(F.MIB_PERCENTAGES, [0] * 10, [], torch.randn(10, 23, generator=gen),
                    torch.randn(23, generator=gen) + 3, torch.randn(23, generator=gen))
    rows = curve.resampled_faithfulness(idx)
    for i, row in zip(idx, rows):
        one = curve.resampled(i)
        assert row.tolist() == one.faithfulness
    assert F.cpr_rows(curve.fractions, rows).tolist() == [curve.resampled(i).cpr() for i in idx]
    assert F.cmd_rows(curve.fractions, rows).tolist() == [curve.resampled(i).cmd() for i in idx]
