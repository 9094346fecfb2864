"""Faithfulness curves of edge circuits and their scores (MIB's CPR and CMD), bootstrap
intervals, top-k stability, and export in MIB's circuit-file format.

**The curve** (:func:`faithfulness_curve`), as MIB's circuit track defines it
(``evaluate_area_under_curve`` in ``MIB_circuit_track/evaluation.py`` of
``hannamw/MIB-circuit-track``, commit b759df3): for each edge percentage k in
:data:`MIB_PERCENTAGES` (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100 %), keep the
``floor(k/100 x n_edges)`` top-scored edges, patch every other edge with its p_ABC activation
(:func:`ioi_helpers.edges.patched_logit_diffs`), and report

    faithfulness(k) = (m(C_k) - m(empty)) / (m(M) - m(empty)),

m the mean logit difference on p_IOI, M the full model (every edge kept: the clean run),
empty the circuit with no edge (every receiver reads p_ABC: the p_ABC run, scored on p_IOI's
answers). MIB prunes each circuit to the edges connected to both the input and the logits
before evaluating it; with patching that changes no logit (an edge out of a node with no kept
input carries that node's p_ABC output anyway; an edge into a node with no kept output is never
read), so it is not done here.

**CPR and CMD** (:func:`cpr`, :func:`cmd`): the x-axis is the *fraction* of edges kept
(k/100, from 0.001 to 1, linear, not log), the integration rule the trapezoid rule between
consecutive points of the curve (no point is added at 0: the area starts at the first point,
0.001), as MIB's ``evaluate_area_under_curve`` with its default ``log_scale=False``. CPR is the
area under faithfulness (higher is better; a circuit as good as the model at every size scores
0.999); CMD the area under ``|1 - faithfulness|`` (lower is better). MIB ranks edges by signed
score for CPR and by absolute score for CMD (``print_results.py`` takes CPR from its runs with
``--absolute`` off and CMD from runs with it on); :func:`faithfulness_curve` takes ``absolute``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from . import edges as edges_mod
from .dataset import IOIDataset

MIB_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
MIB_FORMAT = "MIB circuit-track JSON (EAP-IG Graph.to_json, as circuits/ioi-eap-ig.json)"


def _check_percentages(percentages: Sequence[float]) -> None:
    for p in percentages:
        if not 0 < p <= 100:
            raise ValueError(f"edge percentages must be in (0, 100], got {p}")


def n_kept(n_edges: int, percentage: float) -> int:
    """Edges kept at ``percentage`` % of ``n_edges``: ``floor(percentage/100 x n_edges)``, as
    MIB's ``int(pct * n)`` (with a 1e-9 guard against binary rounding, e.g. 0.1 x 10,000)."""
    _check_percentages([percentage])
    return int(math.floor(percentage / 100 * n_edges + 1e-9))


@dataclass
class Curve:
    """A faithfulness curve and what it was computed from.

    ``per_prompt``: ``[len(percentages), n_prompts]`` logit differences of each circuit;
    ``full`` / ``empty``: ``[n_prompts]`` logit differences of the model and of the empty circuit.
    """

    percentages: tuple[float, ...]
    n_edges: list[int]
    faithfulness: list[float]
    per_prompt: Tensor
    full: Tensor
    empty: Tensor

    @property
    def fractions(self) -> list[float]:
        return [p / 100 for p in self.percentages]

    def cpr(self) -> float:
        return cpr(self.fractions, self.faithfulness)

    def cmd(self) -> float:
        return cmd(self.fractions, self.faithfulness)

    def resampled_faithfulness(self, idx) -> np.ndarray:
        """``[m, len(percentages)]``: the faithfulness of each of ``m`` resamples of the
        prompts at once (``idx``: ``[m, n]`` indices, e.g. :func:`bootstrap_indices`); row i is
        ``resampled(idx[i]).faithfulness``, number for number."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        pp = self.per_prompt[:, idx].double().mean(2)  # [level, m]
        lo, hi = self.empty[idx].double().mean(1), self.full[idx].double().mean(1)
        return ((pp - lo) / (hi - lo)).T.numpy()

    def resampled(self, idx: Sequence[int]) -> "Curve":
        """The same circuits, scored on the prompts ``idx`` (e.g. a bootstrap resample)."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        pp, full, empty = self.per_prompt[:, idx], self.full[idx], self.empty[idx]
        return Curve(self.percentages, self.n_edges, faithfulness_values(pp, full, empty), pp, full, empty)


def faithfulness_values(per_prompt: Float[Tensor, "level prompt"], full: Float[Tensor, "prompt"],
                        empty: Float[Tensor, "prompt"]) -> list[float]:
    """``(mean m(C) - mean m(empty)) / (mean m(M) - mean m(empty))`` for each row of ``per_prompt``."""
    lo, hi = empty.double().mean(), full.double().mean()
    return ((per_prompt.double().mean(1) - lo) / (hi - lo)).tolist()


def faithfulness_curve(model, ioi: IOIDataset, abc: IOIDataset, scores: Float[Tensor, "sender receiver"],
                       percentages: Sequence[float] = MIB_PERCENTAGES, absolute: bool = True,
                       corrupted: dict[str, Tensor] | None = None,
                       baselines: tuple[Tensor, Tensor] | None = None,
                       batch_size: int | None = None) -> Curve:
    """MIB's faithfulness curve of an edge ranking (module docstring).

    Cost: one patched forward per percentage (a whole edge set per forward), plus the p_ABC
    sender cache and the two baselines unless they are passed in.

    Args:
        model: the (bridge) model.
        ioi: p_IOI (run and scored).
        abc: p_ABC (the patched-in activations), matched to ``ioi``.
        scores: ``[n_senders, n_receivers]`` edge scores (:mod:`ioi_helpers.edges`).
        percentages: edge percentages, each in (0, 100].
        absolute: rank edges by ``|score|`` (True) or by signed score.
        corrupted: :func:`ioi_helpers.edges.sender_activations` of ``abc``, to share between methods.
        baselines: ``(full, empty)`` per-prompt logit diffs from :func:`baselines`, to share.
        batch_size: prompts per forward.

    Returns:
        A :class:`Curve`.
    """
    _check_percentages(percentages)
    graph = edges_mod.graph_of(model)
    corrupted = corrupted if corrupted is not None else edges_mod.sender_activations(model, abc)
    full, empty = baselines if baselines is not None else compute_baselines(model, ioi, abc, corrupted, batch_size)
    counts = [n_kept(graph.n_edges, p) for p in percentages]
    rows = []
    for n in counts:
        keep = edges_mod.top_edges(graph, scores, n, absolute=absolute)
        rows.append(edges_mod.patched_logit_diffs(model, ioi, abc, keep, corrupted, batch_size))
    per_prompt = torch.stack(rows)
    return Curve(tuple(percentages), counts, faithfulness_values(per_prompt, full, empty),
                 per_prompt, full, empty)


def compute_baselines(model, ioi: IOIDataset, abc: IOIDataset,
                      corrupted: dict[str, Tensor] | None = None,
                      batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-prompt logit differences of the full model (every edge kept) and of the empty
    circuit (no edge kept), both by :func:`ioi_helpers.edges.patched_logit_diffs`.

    Returns:
        ``(full, empty)``, each ``[n_prompts]``.
    """
    graph = edges_mod.graph_of(model)
    corrupted = corrupted if corrupted is not None else edges_mod.sender_activations(model, abc)
    full = edges_mod.patched_logit_diffs(model, ioi, abc, graph.mask, corrupted, batch_size)
    empty = edges_mod.patched_logit_diffs(model, ioi, abc, torch.zeros_like(graph.mask), corrupted, batch_size)
    return full, empty


def _trapezoid(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("need at least two points, as many x as y")
    return float(sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)))


def _trapezoid_rows(x: Sequence[float], y: np.ndarray) -> np.ndarray:
    """:func:`_trapezoid` of each row of ``y`` (``[m, len(x)]``), in the same order of
    operations (so each value is the one :func:`_trapezoid` gives for that row)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 2 or y.shape[1] != len(x) or len(x) < 2:
        raise ValueError("need rows of at least two points, as many as x")
    total = np.zeros(len(y))
    for i in range(len(x) - 1):
        total = total + (x[i + 1] - x[i]) * (y[:, i] + y[:, i + 1]) / 2
    return total


def cpr_rows(fractions: Sequence[float], faithfulness: np.ndarray) -> np.ndarray:
    """:func:`cpr` of each row of ``faithfulness`` (``[m, len(fractions)]``), e.g. of
    :meth:`Curve.resampled_faithfulness`."""
    return _trapezoid_rows(fractions, faithfulness)


def cmd_rows(fractions: Sequence[float], faithfulness: np.ndarray) -> np.ndarray:
    """:func:`cmd` of each row of ``faithfulness`` (``[m, len(fractions)]``)."""
    return _trapezoid_rows(fractions, np.abs(1 - np.asarray(faithfulness, dtype=float)))


def cpr(fractions: Sequence[float], faithfulness: Sequence[float]) -> float:
    """CPR: area under the faithfulness curve, trapezoid rule on the linear x-axis of edge
    fractions (0.001 .. 1), from the first point to the last.

    Args:
        fractions: fraction of edges kept at each point, increasing.
        faithfulness: faithfulness at each point.

    Returns:
        The area (higher is better).
    """
    return _trapezoid(fractions, faithfulness)


def cmd(fractions: Sequence[float], faithfulness: Sequence[float]) -> float:
    """CMD: area under ``|1 - faithfulness|``, same axis and rule as :func:`cpr`.

    Args:
        fractions: fraction of edges kept at each point, increasing.
        faithfulness: faithfulness at each point.

    Returns:
        The area (lower is better).
    """
    return _trapezoid(fractions, [abs(1 - f) for f in faithfulness])


# ----------------------------------------------------------------------------- uncertainty


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """The resamples of :func:`bootstrap_ci`: ``[n_boot, n]`` item indices drawn with
    replacement, one resample after the other from one generator seeded ``seed`` (so the same
    seed gives the same resamples whether they are used one at a time or all at once)."""
    if n < 1 or n_boot < 1:
        raise ValueError("need n >= 1 and n_boot >= 1")
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, size=n) for _ in range(n_boot)])


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of bootstrap ``values``."""
    if not 0 < level < 1:
        raise ValueError("need 0 < level < 1")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(lo), float(hi)


def bias_corrected_interval(values, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """The bias-corrected percentile interval (Efron's BC; Efron and Tibshirani 1993, section
    14.3, BCa with the acceleration set to 0) of bootstrap ``values`` around ``estimate``.

    With ``p0`` the share of ``values`` below ``estimate`` (ties count half) and
    ``z0 = Phi^-1(p0)``, the bounds are the ``Phi(2 z0 -+ z)`` percentiles, ``z = Phi^-1((1 +
    level) / 2)``. Where the resamples are centred on the estimate (``p0 = 1/2``) this is the
    :func:`percentile_interval`. Where they are not, it shifts the interval by the median bias:
    an AUC near 1 on fewer distinct prompts (a resample) is mostly lower than on all of them,
    so the plain percentile interval sits below the estimate. ``p0`` is clipped to ``[1/(2B),
    1 - 1/(2B)]`` (B resamples) so that an estimate above or below every resample gives a
    finite bound.
    """
    if not 0 < level < 1:
        raise ValueError("need 0 < level < 1")
    v = np.asarray(values, dtype=float)
    b = len(v)
    p0 = (np.sum(v < estimate) + 0.5 * np.sum(v == estimate)) / b
    p0 = min(max(p0, 1 / (2 * b)), 1 - 1 / (2 * b))
    normal = NormalDist()
    z0, z = normal.inv_cdf(p0), normal.inv_cdf((1 + level) / 2)
    lo, hi = np.percentile(v, [100 * normal.cdf(2 * z0 - z), 100 * normal.cdf(2 * z0 + z)])
    return float(lo), float(hi)


IntervalKind = Literal["percentile", "bias-corrected"]


def interval_bounds(values, estimate: float, kind: IntervalKind = "percentile",
                    level: float = 0.95) -> tuple[float, float]:
    """The ``kind`` interval of bootstrap ``values``: :func:`percentile_interval` or
    :func:`bias_corrected_interval` (around ``estimate``)."""
    if kind == "bias-corrected":
        return bias_corrected_interval(values, estimate, level)
    if kind == "percentile":
        return percentile_interval(values, level)
    raise ValueError(f"interval must be 'percentile' or 'bias-corrected', not {kind!r}")


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0, batched: bool = False,
                 interval: IntervalKind = "percentile"
                 ) -> tuple[float, float, float]:
    """A bootstrap interval over ``n`` items (prompts): percentile (default) or bias-corrected
    (:func:`bias_corrected_interval`).

    Args:
        statistic: maps an array of item indices (a resample, with repeats) to a number, e.g.
            ``lambda idx: curve.resampled(idx).cpr()`` or the AUC of
            ``per_prompt_scores[idx].mean(0)``. With ``batched``, it maps an ``[m, n]`` array
            (m resamples) to their ``m`` numbers at once.
        n: number of items.
        n_boot: number of resamples (:func:`bootstrap_indices`: the same ones either way).
        level: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
        seed: seed of the resampling.
        batched: ``statistic`` takes every resample in one call.
        interval: ``"percentile"`` (:func:`percentile_interval`) or ``"bias-corrected"``.

    Returns:
        ``(statistic on all items, lower, upper)``.
    """
    if n < 1 or n_boot < 1 or not 0 < level < 1:
        raise ValueError("need n >= 1, n_boot >= 1 and 0 < level < 1")
    idx = bootstrap_indices(n, n_boot, seed)
    if batched:
        values = np.asarray(statistic(idx), dtype=float).reshape(n_boot)
        estimate = float(np.asarray(statistic(np.arange(n)[None]), dtype=float).reshape(1)[0])
    else:
        values = np.array([statistic(i) for i in idx], dtype=float)
        estimate = float(statistic(np.arange(n)))
    return (estimate, *interval_bounds(values, estimate, interval, level))


def topk_jaccard(graph: edges_mod.EdgeGraph, scores_a: Tensor, scores_b: Tensor, k: int,
                 absolute: bool = True) -> float:
    """Jaccard overlap ``|A & B| / |A | B|`` of the top-``k`` edges of two scorings (e.g. of two
    disjoint prompt sets, :func:`ioi_helpers.edges.disjoint_halves`).

    Args:
        graph: the edge graph.
        scores_a, scores_b: ``[n_senders, n_receivers]`` edge scores.
        k: edges in each top set, >= 1.
        absolute: rank by ``|score|``.

    Returns:
        The overlap in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    a = edges_mod.top_edges(graph, scores_a, k, absolute)
    b = edges_mod.top_edges(graph, scores_b, k, absolute)
    return float((a & b).sum()) / float((a | b).sum())


# ----------------------------------------------------------------------------- export


def write_mib_json(path: str | Path, graph: edges_mod.EdgeGraph, scores: Tensor, d_model: int,
                   in_graph: Tensor | None = None) -> Path:
    """Write edge scores in MIB's circuit-file format (:data:`MIB_FORMAT`): the JSON that
    ``Graph.to_json`` of ``hannamw/EAP-IG`` writes and ``Graph.from_json`` reads, the format of
    the example ``circuits/ioi-eap-ig.json`` of ``hannamw/MIB-circuit-track`` (commit b759df3):
    ``{"cfg": {"n_layers", "n_heads", "parallel_attn_mlp": false, "d_model"},
    "nodes": {name: {"in_graph": bool}}, "edges": {"a0.h1->a2.h3<q>": {"score": float,
    "in_graph": bool}}}``, node names ``input``, ``a{l}.h{h}``, ``m{l}``, ``logits``.

    Args:
        path: file to write.
        graph: the edge graph.
        scores: ``[n_senders, n_receivers]`` edge scores.
        d_model: the model's width (part of MIB's ``cfg``).
        in_graph: ``[n_senders, n_receivers]`` booleans, the circuit (default: every edge; an
            importance-score submission is ranked by score, not by this flag). A node is in the
            graph when one of its edges is.

    Returns:
        The path written.
    """
    in_graph = graph.mask if in_graph is None else (in_graph.bool() & graph.mask)
    nodes: dict[str, dict] = {}
    node_used = {n: False for n in graph.senders}
    node_used[edges_mod.LOGITS] = True
    for s, r in in_graph.nonzero().tolist():
        node_used[graph.senders[s]] = True
        rcv = graph.receivers[r]
        node_used[rcv[:-3] if rcv.endswith(">") else rcv] = True
    for name in list(graph.senders) + [edges_mod.LOGITS]:
        nodes[name] = {"in_graph": bool(node_used[name])}
    edges = {}
    for (s, r), name in zip(graph.mask.nonzero().tolist(), graph.edge_names()):
        edges[name] = {"score": float(scores[s, r]), "in_graph": bool(in_graph[s, r])}
    d = {"cfg": {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": False,
                 "d_model": int(d_model)},
         "nodes": nodes, "edges": edges}
    path = Path(path)
    path.write_text(json.dumps(d))
    return path


def read_mib_json(path: str | Path) -> tuple[edges_mod.EdgeGraph, Tensor, Tensor]:
    """Read a file in MIB's circuit format (:func:`write_mib_json`).

    Returns:
        ``(graph, scores, in_graph)``; edges missing from the file score 0 and are out of the graph.
    """
    d = json.loads(Path(path).read_text())
    cfg = d["cfg"]
    if cfg.get("parallel_attn_mlp"):
        raise ValueError("parallel attention/MLP graphs are not supported")
    graph = edges_mod.edge_graph(int(cfg["n_layers"]), int(cfg["n_heads"]))
    L, H = graph.n_layers, graph.n_heads
    scores = torch.zeros(graph.mask.shape)
    in_graph = torch.zeros(graph.mask.shape, dtype=torch.bool)
    for name, info in d["edges"].items():
        snd, rcv = name.split("->")
        s = edges_mod.sender_index(H, snd)
        r = edges_mod.receiver_index(L, H, rcv)
        if not graph.mask[s, r]:
            raise ValueError(f"{name} is not an edge of a {L} x {H} graph")
        scores[s, r] = float(info.get("score", 0.0))
        in_graph[s, r] = bool(info["in_graph"])
    return graph, scores, in_graph
