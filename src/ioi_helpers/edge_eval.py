"""Chapter 9's edge-level scoring: each method's edge scores against node and edge references,
its MIB faithfulness curve with CPR / CMD, and 95% bootstrap intervals over prompts.

* Node level: a method's edge scores become head scores by :func:`ioi_helpers.edges.head_scores`
  (a head's q, k, v inputs and its output are one node, max of ``|score|``); the AUC is
  :func:`ioi_helpers.roc.auc` against a set of heads.
* Edge level: the AUC of ``|score|`` over every edge of the graph against an edge mask (the
  planted edges of ioi-planted or gpt2-planted read off the construction,
  :func:`ioi_helpers.truth.planted_edge_mask`, or a head circuit's edges, :func:`circuit_edges`).
* Faithfulness: :func:`ioi_helpers.faithfulness.faithfulness_curve` with edges ranked by
  ``|score|`` (one curve per method: 10 patched forwards), CPR and CMD both from it.
* Intervals: bias-corrected percentile bootstrap over prompts
  (:func:`ioi_helpers.faithfulness.bias_corrected_interval`; the plain percentile interval is
  the variant ``interval="percentile"``), every interval from the same resamples (those of
  :func:`ioi_helpers.faithfulness.bootstrap_ci`), all scored at once: the AUCs from the
  per-prompt scores averaged over each resample (methods that give one score per prompt;
  :func:`resample_means`, :func:`ioi_helpers.roc.rank_auc_rows`), CPR and CMD from the curve's
  per-prompt logit differences (:meth:`ioi_helpers.faithfulness.Curve.resampled_faithfulness`:
  the circuits stay those ranked on all prompts; only the prompts they are scored on are
  resampled). Each interval is the one a loop over resamples gives
  (``tests/test_edge_eval.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

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
    """AUC of ``|score|`` over the graph's edges against the edge mask ``truth``
    (:func:`ioi_helpers.roc.rank_auc`)."""
    return roc.rank_auc(scores.abs()[graph.mask].numpy(), truth[graph.mask].numpy())


def node_auc(graph: E.EdgeGraph, scores: Tensor, heads: Iterable[Head]) -> float:
    """AUC of the head scores promoted from ``scores`` (:func:`ioi_helpers.edges.head_scores`)
    against a set of heads."""
    hs = E.head_scores(graph, scores)
    return roc.auc(hs.numpy(), roc.labels_for(tuple(hs.shape), heads))


def evaluate(model, ioi, abc, methods: Mapping[str, Tensor], per_prompt: Mapping[str, Tensor],
             node_refs: Mapping[str, Iterable[Head]], edge_refs: Mapping[str, Tensor],
             n_boot: int = 200, seed: int = 0, batch_size: int | None = None,
             interval: F.IntervalKind = "bias-corrected"
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
        interval: :func:`ioi_helpers.faithfulness.bias_corrected_interval` (default) or the
            plain :func:`ioi_helpers.faithfulness.percentile_interval` (the variant).
        batch_size: prompts per patched forward.

    Returns:
        ``(table, {name: Curve})``.
    """
    graph = E.graph_of(model)
    corrupted = E.sender_activations(model, abc)
    base = F.compute_baselines(model, ioi, abc, corrupted, batch_size)
    rows, curves = [], {}
    n = len(ioi)
    # every interval uses the same resamples (bootstrap_ci's, seeded `seed`), all at once
    idx = F.bootstrap_indices(n, n_boot, seed)
    node_labels = {ref: roc.labels_for((graph.n_layers, graph.n_heads), list(heads)).ravel()
                   for ref, heads in node_refs.items()}

    def add_interval(row, key, estimate, values):
        row[key], (row[key + " lo"], row[key + " hi"]) = (
            estimate, F.interval_bounds(values, estimate, interval))

    for name, scores in methods.items():
        pp = per_prompt.get(name)
        row: dict = {"method": name}
        full = None if pp is None else pp[torch.arange(n)].mean(0)  # the estimate's scores
        means = None if pp is None else resample_means(pp, idx)  # [n_boot, S, R]
        heads = None if means is None else E.head_scores(graph, means).flatten(1).numpy()
        for ref, hs in node_refs.items():
            key = f"node AUC ({ref})"
            if means is None:
                row[key], row[key + " lo"], row[key + " hi"] = node_auc(graph, scores, hs), np.nan, np.nan
            else:
                add_interval(row, key, node_auc(graph, full, hs),
                             roc.rank_auc_rows(heads, node_labels[ref]))
        for ref, mask in edge_refs.items():
            key = f"edge AUC ({ref})"
            if means is None:
                row[key], row[key + " lo"], row[key + " hi"] = edge_auc(graph, scores, mask), np.nan, np.nan
            else:
                add_interval(row, key, edge_auc(graph, full, mask), roc.rank_auc_rows(
                    means.abs()[:, graph.mask].numpy(), mask[graph.mask].numpy()))
        curve = F.faithfulness_curve(model, ioi, abc, scores, corrupted=corrupted, baselines=base,
                                     batch_size=batch_size)
        curves[name] = curve
        resampled = curve.resampled_faithfulness(idx)  # [n_boot, levels]
        for key, fn, rows_fn in (("CPR", F.Curve.cpr, F.cpr_rows), ("CMD", F.Curve.cmd, F.cmd_rows)):
            add_interval(row, key, fn(curve.resampled(np.arange(n))),
                         rows_fn(curve.fractions, resampled))
        rows.append(row)
    return pd.DataFrame(rows), curves


def resample_means(per_prompt: Tensor, idx, chunk: int = 16) -> Tensor:
    """``per_prompt[idx[i]].mean(0)`` for every resample i (``idx``: ``[m, n]`` prompt indices),
    as one ``[m, ...]`` tensor, ``chunk`` resamples per tensor operation (each value is the one
    of the loop, number for number)."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    out = torch.empty((len(idx), *per_prompt.shape[1:]), dtype=per_prompt.dtype)
    for i in range(0, len(idx), chunk):
        out[i:i + chunk] = per_prompt[idx[i:i + chunk]].mean(1)
    return out


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
    ``value [lo, hi]`` (just the value where there is no interval, ``n/a`` where there is no
    value: a method that scores heads has no edge AUC)."""
    out = pd.DataFrame({"method": table["method"]})
    for col in table.columns:
        if col == "method" or col.endswith(" lo") or col.endswith(" hi"):
            continue
        lo, hi = table[col + " lo"], table[col + " hi"]
        out[col] = ["n/a" if np.isnan(v) else
                    f"{v:.{digits}f}" + ("" if np.isnan(a) else f" [{a:.{digits}f}, {b:.{digits}f}]")
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


# ----------------------------------------------------------------------------- the page's methods


def edge_references(model, refs: Mapping[str, Mapping[str, Iterable[Head]]]
                    ) -> tuple[dict[str, list[Head]], dict[str, Tensor], dict[str, str]]:
    """The node and edge references of chapter 9's edge section, from its head references
    (:func:`ioi_helpers.autodiscovery.references`: ``planted``, ``manual``, ``paper``).

    Node reference: the union of a reference's classes. Edge reference: for ``planted`` on an
    ``ioi-planted`` or ``gpt2-planted`` model, the planted edge truth
    (:func:`ioi_helpers.truth.planted_edge_mask`, read off the construction; on gpt2-planted it
    also holds the edges through its decoys and background copiers that carry signal, so it is
    not the edges between the planted heads only); otherwise the edges between the reference's
    heads (:func:`circuit_edges`).

    Args:
        model: the (bridge) model.
        refs: reference name -> class name -> heads.

    Returns:
        ``(node_refs, edge_refs, how)``: name -> heads, name -> ``[sender, receiver]`` mask,
        and name -> how the edge reference was built (``"planted edge truth"`` or
        ``"edges between its heads"``).
    """
    from . import truth

    graph = E.graph_of(model)
    node_refs, edge_refs, how = {}, {}, {}
    for name, classes in refs.items():
        heads = sorted({(int(h[0]), int(h[1])) for hs in classes.values() for h in hs})
        node_refs[name] = heads
        exact = truth.planted_edge_mask(model) if name == "planted" else None
        if exact is not None:
            edge_refs[name], how[name] = exact & graph.mask, "planted edge truth"
        else:
            edge_refs[name], how[name] = circuit_edges(graph, heads), "edges between its heads"
    return node_refs, edge_refs, how


def score_methods(model, ioi, abc, steps: int = 5, seed: int = 0,
                  batch_size: int | None = None, ig: bool = True
                  ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, float]]:
    """Every edge scored by EAP, EAP-IG (``steps`` points; skipped when ``ig`` is False) and
    the seeded random baseline, each timed.

    Args:
        model, ioi, abc: the model and matched prompts.
        steps: EAP-IG's interpolation points, an int >= 1 (MIB's default: 5).
        seed: the random baseline's seed.
        batch_size: prompts per forward/backward.
        ig: run EAP-IG.

    Returns:
        ``(scores, per_prompt, seconds)``: method name -> ``[sender, receiver]`` mean scores,
        -> ``[prompt, sender, receiver]`` per-prompt scores (EAP, EAP-IG), -> wall seconds.
    """
    import time

    E._check_steps(steps)
    scores, per_prompt, seconds = {}, {}, {}
    runs = [("EAP", lambda: E.eap_scores(model, ioi, abc, batch_size, per_prompt=True))]
    if ig:
        runs.append(("EAP-IG", lambda: E.eap_ig_scores(model, ioi, abc, steps, batch_size,
                                                       per_prompt=True)))
    for name, fn in runs:
        t0 = time.perf_counter()
        per_prompt[name] = fn()
        scores[name] = per_prompt[name].mean(0)
        seconds[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores["random"] = E.random_scores(E.graph_of(model), seed)
    seconds["random"] = time.perf_counter() - t0
    return scores, per_prompt, seconds


def add_node_method(table: pd.DataFrame, name: str, heads: Tensor,
                    node_refs: Mapping[str, Iterable[Head]]) -> pd.DataFrame:
    """``table`` (of :func:`evaluate`) with one more row for a method that scores heads, not
    edges (per-head attribution): its node AUC per reference, every other column NaN (no edge
    AUC, no faithfulness curve, no interval).

    Args:
        table: the table to extend (not modified).
        name: the method's name.
        heads: ``[n_layers, n_heads]`` scores (higher: more in the circuit).
        node_refs: reference name -> heads, as given to :func:`evaluate`.
    """
    row: dict = {c: np.nan for c in table.columns if c != "method"}
    row["method"] = name
    for ref, hs in node_refs.items():
        row[f"node AUC ({ref})"] = roc.auc(heads.flatten().numpy(),
                                           roc.labels_for(tuple(heads.shape), list(hs)).flatten())
    return pd.concat([table, pd.DataFrame([row])], ignore_index=True)[
        list(table.columns) or list(row)]


def stability(graph: E.EdgeGraph, halves: Mapping[str, tuple[Tensor, Tensor]],
              percentages: Sequence[float] = (1, 5, 10)) -> pd.DataFrame:
    """Jaccard overlap of the top-k edges of two scorings per method (e.g. on two disjoint
    prompt halves, :func:`ioi_helpers.edges.disjoint_halves`), at k = ``percentages`` % of
    the graph's edges (:func:`ioi_helpers.faithfulness.n_kept`, at least 1 edge).

    Args:
        graph: the edge graph.
        halves: method name -> (scores on one half, scores on the other).
        percentages: edge percentages, each in (0, 100].

    Returns:
        One row per method: ``method``, then one column ``top {p}% ({k} edges)`` per percentage.
    """
    ks = [(p, max(1, F.n_kept(graph.n_edges, p))) for p in percentages]
    rows = []
    for name, (a, b) in halves.items():
        row: dict = {"method": name}
        for p, k in ks:
            row[f"top {p:g}% ({k} edges)"] = F.topk_jaccard(graph, a, b, k)
        rows.append(row)
    return pd.DataFrame(rows)


def export_mib(folder, graph: E.EdgeGraph, scores: Mapping[str, Tensor], d_model: int,
               prefix: str) -> dict[str, str]:
    """Each method's edge scores as a MIB circuit file
    (:func:`ioi_helpers.faithfulness.write_mib_json`), ``{folder}/{prefix}.{key(method)}.json``.

    Returns:
        method name -> path written.
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: str(F.write_mib_json(folder / f"{prefix}.{key(name)}.json", graph, s, d_model))
            for name, s in scores.items()}


def half_scores(model, ioi, abc, halves: tuple[Sequence[int], Sequence[int]], steps: int = 5,
                seed: int = 0, ig: bool = True, per_prompt: Mapping[str, Tensor] | None = None
                ) -> dict[str, tuple[Tensor, Tensor]]:
    """Each method of :func:`score_methods` run twice, on two prompt sets (e.g.
    :func:`ioi_helpers.edges.disjoint_halves`), for :func:`stability`. The random baseline
    takes seed ``seed`` on the first set and ``seed + 1`` on the second: two independent random
    rankings, the overlap of chance.

    With ``per_prompt`` (method name -> ``[n_prompts, sender, receiver]``, as
    :func:`score_methods` returns for all of ``ioi``), those methods are not run again: a
    method's scores on a set are the mean of its per-prompt scores over that set's prompts
    (each prompt's scores do not depend on the others in its batch; the same numbers up to
    float rounding), and ``steps`` and ``ig`` are not used.

    Returns:
        method name -> (scores on the first set, scores on the second).
    """
    if per_prompt is not None:
        graph = E.graph_of(model)
        out = {name: tuple(pp[torch.as_tensor(list(h))].mean(0) for h in halves)
               for name, pp in per_prompt.items()}
        out["random"] = tuple(E.random_scores(graph, seed + i) for i in range(len(halves)))
        return out
    runs = [score_methods(model, ioi[list(h)], abc[list(h)], steps, seed + i, ig=ig)[0]
            for i, h in enumerate(halves)]
    return {name: (runs[0][name], runs[1][name]) for name in runs[0]}


@dataclass
class Control:
    """The negative control of :func:`negative_control`: the model, its prompts, each method's
    scores, the :func:`evaluate` table and curves, the edge references and wall seconds."""

    model: object
    n_prompts: int
    scores: dict[str, Tensor]
    table: pd.DataFrame
    curves: dict[str, F.Curve]
    edge_refs: dict[str, Tensor]
    seconds: dict[str, float]


def negative_control(model, n_prompts: int, steps: int = 5, seed: int = 0,
                     template_set="mixed", prepend_bos: bool = False, n_boot: int = 200,
                     ig: bool = True, name: str = "gpt2-random",
                     control_model=None) -> Control | None:
    """The same edge methods and scores on a model with no circuit (``gpt2-random``: GPT-2
    small's shape, seeded random weights), against the paper's head positions (which name no
    circuit there): node and edge AUCs should sit near 0.5, the curves carry no signal.

    Args:
        model: the chapter's model; when it is already ``name``, there is no control (None).
        n_prompts: prompts for the control (an int >= 2; small: GPT-2 small's cost per prompt).
        steps, seed: as in :func:`score_methods`; ``ig``: run EAP-IG there too.
        template_set, prepend_bos: the prompts' settings (:func:`prompts`).
        n_boot: bootstrap resamples of :func:`evaluate`.
        name: the control model (:func:`ioi_helpers.models.load_model`).
        control_model: the control model itself, already loaded (default: load ``name``).

    Returns:
        A :class:`Control` (``seconds``: each method's scoring, ``"load"``, ``"evaluate"``,
        ``"total"``), or None.
    """
    import time

    from . import models, paper

    if str(getattr(model, "ioi_model_name", "")).startswith(name):
        return None
    t0 = time.perf_counter()
    ctrl = control_model if control_model is not None else models.load_model(name)
    seconds = {"load": time.perf_counter() - t0}
    ioi, abc = prompts(ctrl, n_prompts, seed, template_set, prepend_bos)
    scores, pp, secs = score_methods(ctrl, ioi, abc, steps, seed, ig=ig)
    graph = E.graph_of(ctrl)
    heads = sorted({tuple(h) for hs in paper.CIRCUIT.values() for h in hs
                    if h[0] < graph.n_layers and h[1] < graph.n_heads})
    edge_refs = {"paper heads": circuit_edges(graph, heads)}
    t1 = time.perf_counter()
    table, curves = evaluate(ctrl, ioi, abc, scores, pp, {"paper heads": heads}, edge_refs,
                             n_boot=n_boot, seed=seed)
    seconds |= secs | {"evaluate": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return Control(ctrl, len(ioi), scores, table, curves, edge_refs, seconds)


#: Edges of MIB's GPT-2 small IOI circuit file (``circuits/ioi-eap-ig.json`` of
#: ``hannamw/MIB-circuit-track``, commit b759df3; :mod:`ioi_helpers.edges`' docstring).
MIB_GPT2_SMALL_EDGES = 32491

#: How the page names its references on the faithfulness axes.
CIRCUIT_LABELS = {"planted": "planted", "manual": "hand-found", "paper": "paper's circuit"}


def circuit_points(model, ioi, abc, masks: Mapping[str, Tensor], curve: F.Curve | None,
                   batch_size: int | None = None) -> pd.DataFrame:
    """:func:`circuit_point` of each edge mask (reference name -> mask), one row each:
    ``circuit`` (:data:`CIRCUIT_LABELS`), ``fraction``, ``faithfulness``, ``edges``; empty
    without masks or without a curve (whose baselines the points share)."""
    cols = ["circuit", "fraction", "faithfulness", "edges"]
    if curve is None or not masks:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame([{"circuit": CIRCUIT_LABELS.get(n, n)}
                         | circuit_point(model, ioi, abc, m, curve, batch_size)
                         for n, m in masks.items()], columns=cols)


def panel_frames(panels: Mapping[str, tuple[Mapping[str, F.Curve], pd.DataFrame | None]],
                 control: Control | None = None, control_label: str = "gpt2-random (control)"
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long tables of :func:`ioi_helpers.plots.faithfulness_chart`, one ``panel`` per
    entry of ``panels`` (panel -> (curves, circuit points)) and one more for ``control`` when
    it is not None.

    Returns:
        ``(curves, points)``, each with a ``panel`` column.
    """
    items = dict(panels)
    if control is not None:
        items[control_label] = (control.curves, None)
    lines, dots = [], []
    for panel, (curves, points) in items.items():
        lines.append(curve_frame(curves).assign(panel=panel))
        if points is not None and len(points):
            dots.append(points.assign(panel=panel))
    cols = ["circuit", "fraction", "faithfulness", "edges", "panel"]
    return (pd.concat(lines, ignore_index=True),
            pd.concat(dots, ignore_index=True) if dots else pd.DataFrame(columns=cols))


def chance_summary(table: pd.DataFrame) -> dict[str, float]:
    """How close an :func:`evaluate` table's AUCs sit to chance (0.5), for a negative control.

    Returns:
        ``min`` and ``max`` of every node and edge AUC in the table, ``intervals`` (how many of
        them have a bootstrap interval) and ``contain_half`` (how many of those contain 0.5).
    """
    cols = [c for c in table.columns if "AUC (" in c and not c.endswith((" lo", " hi"))]
    values = table[cols].to_numpy(dtype=float).ravel() if cols else np.array([])
    values = values[~np.isnan(values)]
    n = inside = 0
    for c in cols:
        for lo, hi in zip(table[c + " lo"], table[c + " hi"]):
            if not (np.isnan(lo) or np.isnan(hi)):
                n += 1
                inside += int(lo <= 0.5 <= hi)
    return {"min": float(values.min()) if len(values) else float("nan"),
            "max": float(values.max()) if len(values) else float("nan"),
            "intervals": n, "contain_half": inside}
