"""Chapter 9's edge-level scoring: each method's edge scores against node and edge references,
its MIB faithfulness curve with CPR / CMD, and 95% bootstrap intervals over prompts.

* Node level: a method's edge scores become head scores by :func:`ioi_helpers.edges.head_scores`
  (a head's q, k, v inputs and its output are one node, max of ``|score|``); the AUC is
  :func:`ioi_helpers.roc.auc` against a set of heads.
* Edge level: the AUC of ``|score|`` over every edge of the graph against an edge mask (the
  planted edges, :func:`ioi_helpers.truth.planted_edge_mask`, or a head circuit's edges,
  :func:`circuit_edges`).
* Faithfulness: :func:`ioi_helpers.faithfulness.faithfulness_curve` with edges ranked by
  ``|score|`` (one curve per method: 10 patched forwards), CPR and CMD both from it.
* Intervals: percentile bootstrap over prompts (:func:`ioi_helpers.faithfulness.bootstrap_ci`):
  the AUCs from the per-prompt scores averaged over each resample (methods that give one score
  per prompt), CPR and CMD from the curve's per-prompt logit differences
  (:meth:`ioi_helpers.faithfulness.Curve.resampled`: the circuits stay those ranked on all
  prompts; only the prompts they are scored on are resampled).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from . import edges as E
from . import faithfulness as F
from . import roc

Head = tuple[int, int]


def circuit_edges(graph: E.EdgeGraph, heads: Iterable[Head]) -> Bool[Tensor, "sender receiver"]:
    """The edges of a head circuit: every edge of the graph between two of its nodes, the nodes
    being ``input``, the heads (each head's q, k and v inputs) and ``logits``; MLPs are not in
    it (their edges are patched, as the edge graph patches everything outside a circuit)."""
    H = graph.n_heads
    names = {E.INPUT} | {f"a{l}.h{h}" for l, h in heads}
    s_in = torch.tensor([s in names for s in graph.senders])
    r_in = torch.tensor([(r[:-3] if r.endswith(">") else r) in names | {E.LOGITS}
                         for r in graph.receivers])
    del H
    return graph.mask & s_in[:, None] & r_in[None, :]


def acdc_edge_scores(graph: E.EdgeGraph, edges: pd.DataFrame) -> Float[Tensor, "sender receiver"]:
    """Edge scores from the ACDC-style walk's tested edges (``autodiscovery.acdc(...).edges``,
    head names ``"l.h"`` and ``"logits"``): the largest ``|score|`` over the positions tested;
    edges the walk never tested (from the input, to or from MLPs, into heads it never reached)
    score 0."""
    L, H = graph.n_layers, graph.n_heads
    out = torch.zeros(graph.mask.shape)
    for row in edges.itertuples():
        snd = "a{}.h{}".format(*row.sender.split("."))
        rcv = E.LOGITS if row.receiver == E.LOGITS else "a{}.h{}<{}>".format(*row.receiver.split("."), row.input)
        s, r = E.sender_index(H, snd), E.receiver_index(L, H, rcv)
        out[s, r] = max(float(out[s, r]), abs(float(row.score)))
    return out


def edge_auc(graph: E.EdgeGraph, scores: Tensor, truth: Tensor) -> float:
    """AUC of ``|score|`` over the graph's edges against the edge mask ``truth``."""
    return roc.auc(scores.abs()[graph.mask].numpy(), truth[graph.mask].numpy())


def node_auc(graph: E.EdgeGraph, scores: Tensor, heads: Iterable[Head]) -> float:
    """AUC of the head scores promoted from ``scores`` (:func:`ioi_helpers.edges.head_scores`)
    against a set of heads."""
    hs = E.head_scores(graph, scores)
    return roc.auc(hs.numpy(), roc.labels_for(tuple(hs.shape), heads))


def evaluate(model, ioi, abc, methods: Mapping[str, Tensor], per_prompt: Mapping[str, Tensor],
             node_refs: Mapping[str, Iterable[Head]], edge_refs: Mapping[str, Tensor],
             n_boot: int = 200, seed: int = 0, batch_size: int | None = None
             ) -> tuple[pd.DataFrame, dict[str, F.Curve]]:
    """One row per method: node AUC per reference, edge AUC per edge reference, CPR and CMD,
    each with its 95% bootstrap interval (``lo`` / ``hi`` columns; NaN where the method gives
    no per-prompt scores).

    Args:
        model, ioi, abc: the model and matched prompts (the faithfulness curves run on them).
        methods: name -> ``[n_senders, n_receivers]`` edge scores.
        per_prompt: name -> ``[n_prompts, n_senders, n_receivers]`` (for the AUC intervals);
            methods missing here get no AUC interval.
        node_refs: reference name -> heads.
        edge_refs: reference name -> edge mask.
        n_boot: bootstrap resamples; seed: their seed.
        batch_size: prompts per patched forward.

    Returns:
        ``(table, {name: Curve})``.
    """
    graph = E.graph_of(model)
    corrupted = E.sender_activations(model, abc)
    base = F.compute_baselines(model, ioi, abc, corrupted, batch_size)
    rows, curves = [], {}
    n = len(ioi)

    def add(row, key, stat, pp):
        if pp is None:
            row[key], row[key + " lo"], row[key + " hi"] = stat(None), np.nan, np.nan
            return
        row[key], row[key + " lo"], row[key + " hi"] = F.bootstrap_ci(
            lambda idx: stat(pp[torch.as_tensor(idx)].mean(0)), n, n_boot, seed=seed)

    for name, scores in methods.items():
        pp = per_prompt.get(name)
        row: dict = {"method": name}
        for ref, heads in node_refs.items():
            heads = list(heads)
            add(row, f"node AUC ({ref})",
                lambda s, heads=heads: node_auc(graph, scores if s is None else s, heads), pp)
        for ref, mask in edge_refs.items():
            add(row, f"edge AUC ({ref})",
                lambda s, mask=mask: edge_auc(graph, scores if s is None else s, mask), pp)
        curve = F.faithfulness_curve(model, ioi, abc, scores, corrupted=corrupted, baselines=base,
                                     batch_size=batch_size)
        curves[name] = curve
        for key, fn in (("CPR", F.Curve.cpr), ("CMD", F.Curve.cmd)):
            row[key], row[key + " lo"], row[key + " hi"] = F.bootstrap_ci(
                lambda idx, fn=fn: fn(curve.resampled(idx)), n, n_boot, seed=seed)
        rows.append(row)
    return pd.DataFrame(rows), curves


def circuit_point(model, ioi, abc, keep: Tensor, curve: F.Curve, batch_size: int | None = None
                  ) -> dict[str, float]:
    """Where a fixed circuit (an edge mask) sits on the faithfulness axes: its fraction of the
    graph's edges and its faithfulness, with the same full and empty baselines as ``curve``."""
    graph = E.graph_of(model)
    keep = keep & graph.mask
    ld = E.patched_logit_diffs(model, ioi, abc, keep, batch_size=batch_size)
    f = F.faithfulness_values(ld[None], curve.full, curve.empty)[0]
    return {"fraction": int(keep.sum()) / graph.n_edges, "faithfulness": f, "edges": int(keep.sum())}


# ----------------------------------------------------------------------------- the page's plumbing


def prompts(model, n: int, seed: int, template_set, prepend_bos: bool):
    """``n`` matched (p_IOI, p_ABC) prompts for ``model``'s tokenizer (the control's data)."""
    from .dataset import make_abc_dataset, make_ioi_dataset

    if not isinstance(n, int) or n < 2:
        raise ValueError(f"need an int >= 2 prompts, got {n!r}")
    ioi = make_ioi_dataset(model.tokenizer, n, seed=seed, template_set=template_set,
                           prepend_bos=prepend_bos)
    return ioi, make_abc_dataset(model.tokenizer, ioi)


def curve_frame(curves: Mapping[str, F.Curve]) -> pd.DataFrame:
    """Long table ``method``, ``fraction``, ``faithfulness`` of several curves (for plotting)."""
    return pd.DataFrame([{"method": name, "fraction": x, "faithfulness": y}
                         for name, c in curves.items() for x, y in zip(c.fractions, c.faithfulness)])


def with_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table of :func:`evaluate` with each value and its interval in one cell,
    ``value [lo, hi]`` (just the value where there is no interval)."""
    out = pd.DataFrame({"method": table["method"]})
    for col in table.columns:
        if col == "method" or col.endswith(" lo") or col.endswith(" hi"):
            continue
        lo, hi = table[col + " lo"], table[col + " hi"]
        out[col] = [f"{v:.{digits}f}" + ("" if np.isnan(a) else f" [{a:.{digits}f}, {b:.{digits}f}]")
                    for v, a, b in zip(table[col], lo, hi)]
    return out


def display_table(table: pd.DataFrame) -> None:
    """Show :func:`with_intervals` of a table, without the index."""
    from IPython.display import display

    display(with_intervals(table).style.hide(axis="index"))


def key(name: str) -> str:
    """A method's name as a results key: ``EAP-IG`` -> ``eap_ig``."""
    import re

    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def record(chapter: str, table: pd.DataFrame, settings: dict, prefix: str) -> None:
    """Record every cell of an :func:`evaluate` table as ``{prefix}.{method}.{column}``
    (``node_auc_planted``, ``cpr_lo``, ...)."""
    from . import results

    for row in table.to_dict("records"):
        for col, value in row.items():
            if col != "method":
                results.record(chapter, f"{prefix}.{key(row['method'])}.{key(col)}", float(value),
                               settings)


def backup_blind_spot(model, ioi, abc, name_movers: Iterable[Head],
                      reference: Mapping[str, Iterable[Head]], threshold: float) -> pd.DataFrame:
    """EAP node scores of the reference's Backup Name Movers (fractions of the clean logit
    difference), on the clean run and with the Name Movers knocked out (mean-ablated from
    p_ABC at every position, :mod:`ioi_helpers.ablation`, as chapter 6), and whether each
    clears ``threshold``.

    Returns:
        One row per backup head: ``head``, ``clean run``, ``Name Movers knocked out`` and the
        two ``... found`` booleans; empty when the reference has no backups.
    """
    from . import ablation, metrics

    backups = sorted(tuple(h) for h in reference.get("Backup Name Mover", []))
    cols = ["head", "clean run", "Name Movers knocked out", "found (clean)", "found (knocked out)"]
    if not backups:
        return pd.DataFrame(columns=cols)
    graph = E.graph_of(model)
    clean = abs(metrics.logit_diff(metrics.end_logits(model, ioi), ioi).mean().item())
    plain = E.head_scores(graph, E.eap_scores(model, ioi, abc)) / clean
    values = ablation.ablation_values(model, ioi, abc)
    mask = ablation.knockout_mask(model, ioi, list(name_movers))
    with model.hooks(fwd_hooks=ablation.ablation_hooks(model, mask, values)):
        ko = E.head_scores(graph, E.eap_scores(model, ioi, abc)) / clean
    rows = [{"head": f"{l}.{h}", "clean run": float(plain[l, h]),
             "Name Movers knocked out": float(ko[l, h]),
             "found (clean)": bool(plain[l, h] >= threshold),
             "found (knocked out)": bool(ko[l, h] >= threshold)} for l, h in backups]
    return pd.DataFrame(rows, columns=cols)


def recall(blind: pd.DataFrame, which: str) -> float:
    """Share of the backups found at the threshold in :func:`backup_blind_spot`'s ``which``
    column (``"clean run"`` or ``"Name Movers knocked out"``); NaN without backups."""
    col = "found (clean)" if which == "clean run" else "found (knocked out)"
    return float(blind[col].mean()) if len(blind) else float("nan")
