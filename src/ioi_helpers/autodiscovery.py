"""Automated circuit discovery: three methods that rank heads, scored against known circuits.

The paper found its circuit by hand, one path-patching experiment per step
(:mod:`ioi_helpers.discovery`). Its successors automate the search. This module runs three of
them on the same p_IOI / p_ABC pair and the same metric (the mean logit difference
logit(IO) - logit(S) at END on p_IOI), so that their rankings can be compared with
:mod:`ioi_helpers.roc` against a reference set of heads.

Every method gives each head a **score** (a fraction of the clean logit difference, >= 0,
higher = more surely in the circuit) and has a **default threshold** (score >= threshold is
"selected"):

(a) :func:`attribution_heads`: head-level attribution patching, with TransformerLens' own
    ``transformer_lens.tools.analysis.attribution_patching.attribution_patch`` (node
    granularity). Semantics: TL's "corrupt" run, where the gradient is taken, is our p_IOI run,
    and TL's "clean" tokens are our p_ABC, so a node's score ``(a_ABC - a_IOI) . dm/da`` is the
    first-order estimate of activation patching that node from p_ABC into the p_IOI run (as
    :func:`ioi_helpers.patching.act_patch_heads` does). TL scores a head at each position;
    we sum a head's positions (= patching it at all positions, to first order) and average
    over prompts. Where ours differs: TL takes one metric for all pairs, while each IOI prompt
    has its own END, IO and S, so we call TL once per prompt (TL itself runs one forward and
    backward per pair); and the bridge's weights do not require gradients, so a hook makes the
    token embedding a leaf that does, inside ``torch.enable_grad()`` (the package otherwise
    runs with gradients off).
(b) :func:`edge_attribution`: edge attribution patching (EAP, Syed et al. 2023) between heads,
    MLPs optional. Edge score: ``(a_ABC[writer] - a_IOI[writer]) . dm/d(input of reader)``,
    summed over positions and averaged over prompts, where a writer is a head's output
    ``z W_O`` (or an MLP's output) and a reader a head's query, key or value input (before its
    LayerNorm), an MLP's input, or the logits (the final residual stream). This is the score of
    TL's ``granularity="edge"`` summed over positions, computed in one batched forward and
    backward (TL's edge sweep runs one prompt at a time and keeps one Python float per edge and
    position). Gradients come from TL's ``cache_activation_and_gradient``.
    Without MLPs, an edge head -> head is the direct write only (a path through an MLP is not
    counted); with MLPs it is two edges through the MLP node.
(c) :func:`acdc`: ACDC-style pruning (Conmy et al. 2023) from the logits backwards, with the
    paper's path patching (:func:`ioi_helpers.patching.path_patch`, Algorithm 1) as the edge
    test: an edge sender -> receiver (the logits, or a head's q, k or v at a named position) is
    removed when patching it (sender from p_ABC along that path only) changes the logit
    difference by less than ``tau`` x the clean logit difference; the heads kept become
    receivers in turn. Heads only: MLPs are not nodes; they are recomputed inside each path,
    as in the paper. Where ours differs from ACDC: ACDC removes edges cumulatively (each test
    runs in the already-pruned graph, metric KL divergence); here every edge is tested against
    the unpruned model, like the paper's experiments. That makes one walk at ``tau_min`` give
    the circuit at every ``tau >= tau_min`` exactly (see :func:`widest_path_scores`), hence an
    exact ROC curve over tau from one run.

Head scores from edges (b, c): a head is in the circuit at threshold t when a chain of edges
of |score| >= t joins it to the logits, so its score is the widest-path value (the largest t
for which such a chain exists), :func:`widest_path_scores`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from . import hooks, metrics, models, paper, patching, roc
from .dataset import POSITIONS, IOIDataset
from .hooks import Head

ATTRIBUTION_THRESHOLD = 0.03  # default thresholds, fractions of the clean logit difference
EAP_THRESHOLD = 0.03
ACDC_TAU = 0.03
ACDC_TAU_MIN = 0.01  # the walk that gives the ROC curve over tau >= this
LOGITS = "logits"


@dataclass
class MethodResult:
    """One method's head scores and what it took to compute them."""

    method: str
    scores: Float[Tensor, "layer head"]  # >= 0, fraction of the clean logit diff
    threshold: float  # default threshold on scores
    seconds: float  # wall time
    clean: float  # clean logit diff (the unit of every score)
    effect: Tensor | None = None  # signed per-head estimate, where the method has one
    edges: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per scored edge
    valid_from: float = 0.0  # scores below this are not resolved (ACDC walk's tau_min)
    note: str = ""
    cpu_seconds: float = float("nan")  # CPU time of this process (all threads): robust to a busy machine

    def selected(self, threshold: float | None = None) -> list[Head]:
        t = self.threshold if threshold is None else threshold
        return [tuple(h) for h in torch.nonzero(self.scores >= t).tolist()]


# ----------------------------------------------------------------------------- gradients


@contextlib.contextmanager
def activation_grad(model):
    """Gradients on, with the token embedding made a leaf that requires them.

    The bridge's parameters have ``requires_grad=False`` and the package runs with gradients
    off; this hook (registered first, so it runs before any caching hook on ``hook_embed``)
    lets autograd reach every activation without touching a parameter.
    """

    def leaf(x, hook):
        return x.detach().requires_grad_(True)

    with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", leaf)]), \
            warnings.catch_warnings():
        # torch notes that module backward hooks fire on outputs when no input needs a
        # gradient: true here and harmless (TL reads the gradients at the hook points)
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


@contextlib.contextmanager
def _split_inputs(model):
    """Per-head q/k/v inputs and the MLP input as hook points (TL flags), restored after."""
    cfg = model.cfg
    saved = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, bool(getattr(cfg, "use_attn_in", False)))
    try:
        if saved[2]:
            model.set_use_attn_in(False)
        model.set_use_split_qkv_input(True)
        model.set_use_hook_mlp_in(True)
        yield
    finally:
        model.set_use_split_qkv_input(saved[0])
        model.set_use_hook_mlp_in(saved[1])
        if saved[2]:
            model.set_use_attn_in(True)


def _clean_logit_diff(model, ds: IOIDataset) -> float:
    end_logits, _ = hooks.run(model, ds.tokens, ds.pos["END"])  # in the model's dtype
    return metrics.logit_diff(end_logits, ds).mean().item()


# ----------------------------------------------------------------------------- (a) attribution


def attribution_heads(model, ioi: IOIDataset, abc: IOIDataset,
                      threshold: float = ATTRIBUTION_THRESHOLD) -> MethodResult:
    """(a) Head-level attribution patching with TransformerLens' ``attribution_patch``.

    Returns scores ``|effect|`` where ``effect[l, h]`` estimates (to first order) the change of
    the mean logit diff when head l.h's output is patched from p_ABC at all positions, as a
    fraction of the clean logit diff. See the module docstring for the semantics.
    """
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch

    t0, c0 = time.perf_counter(), time.process_time()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    dev = model.cfg.device
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    with activation_grad(model):
        for i in range(len(ioi)):
            n, end = int(ioi.lengths[i]), int(ioi.pos["END"][i])
            io, s = int(ioi.io_tokens[i]), int(ioi.s_tokens[i])
            res = attribution_patch(model, abc.tokens[i:i + 1, :n].to(dev),
                                    ioi.tokens[i:i + 1, :n].to(dev),
                                    lambda lg, end=end, io=io, s=s: lg[0, end, io] - lg[0, end, s])
            for node, v in res.node_scores.items():
                if node.kind == "attn_head_out":
                    total[node.layer, node.head] += v
    clean = _clean_logit_diff(model, ioi)
    effect = (total / len(ioi) / abs(clean)).float()
    return MethodResult("attribution patching (heads)", effect.abs(), threshold,
                        time.perf_counter() - t0, clean, effect=effect,
                        cpu_seconds=time.process_time() - c0,
                        note="TransformerLens attribution_patch, node scores summed over positions")


# ----------------------------------------------------------------------------- (b) EAP


def _node(l: int, h: int | None = None) -> str:
    return f"{l}.{h}" if h is not None else f"MLP {l}"


def edge_attribution(model, ioi: IOIDataset, abc: IOIDataset, mlps: bool = False,
                     threshold: float = EAP_THRESHOLD, batch_size: int = 20) -> MethodResult:
    """(b) Edge attribution patching between heads (and MLPs if ``mlps``).

    ``edges``: one row per edge, columns ``sender``, ``receiver``, ``input`` (``q``, ``k``,
    ``v``, ``mlp`` or ``logits``) and ``score`` (signed, fraction of the clean logit diff).
    Head scores: :func:`widest_path_scores` of ``|score|``.
    """
    from transformer_lens.tools.analysis.attribution_patching import cache_activation_and_gradient

    t0, c0 = time.perf_counter(), time.process_time()
    L, H = model.cfg.n_layers, model.cfg.n_heads
    dev = model.cfg.device
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    mlp_out = [f"blocks.{l}.hook_mlp_out" for l in range(L)] if mlps else []
    readers = {(l, c): f"blocks.{l}.attn.hook_{c}_input" for l in range(L) for c in "qkv"}
    if mlps:
        readers.update({(l, "mlp"): f"blocks.{l}.hook_mlp_in" for l in range(L)})
    final = f"blocks.{L - 1}.hook_resid_post"
    W_O = torch.stack([model.blocks[l].attn.W_O for l in range(L)])  # [L, H, d_head, d]
    acc: dict[tuple, Tensor] = {}

    def add(key, value):
        acc[key] = acc.get(key, 0) + value.double().cpu()

    with _split_inputs(model), activation_grad(model):
        for start in range(0, len(ioi), batch_size):
            part, src = ioi[start:start + batch_size], abc[start:start + batch_size]
            rows = torch.arange(len(part), device=dev)
            end, io, s = (part.pos["END"].to(dev), part.io_tokens.to(dev), part.s_tokens.to(dev))

            def metric(lg):  # summed, so that dividing by N at the end gives the mean
                return (lg[rows, end, io] - lg[rows, end, s]).sum()

            names = z_names + mlp_out
            base = cache_activation_and_gradient(model, part.tokens.to(dev), metric,
                                                 names_filter=names + list(readers.values()) + [final])
            other = cache_activation_and_gradient(model, src.tokens.to(dev), metric,
                                                  names_filter=names, compute_gradient=False)
            with torch.no_grad():
                dz = torch.stack([other.activations[n] - base.activations[n] for n in z_names], 2)
                delta = torch.einsum("bplhe,lhed->bplhd", dz, W_O)  # [b, p, L, H, d]
                d_mlp = [other.activations[n] - base.activations[n] for n in mlp_out]
                for (l, c), name in readers.items():
                    g = base.gradients[name]  # [b, p, H, d] (q/k/v) or [b, p, d] (mlp)
                    upto = l + 1 if c == "mlp" else l  # a layer's heads feed its own MLP
                    if upto == 0:
                        continue
                    if c == "mlp":
                        add((l, c), torch.einsum("bplhd,bpd->lh", delta[:, :, :upto], g))
                    else:
                        add((l, c), torch.einsum("bplhd,bpgd->lhg", delta[:, :, :upto], g))
                    for lm in range(l if mlps else 0):  # MLP lm feeds every later layer
                        eq = "bpd,bpd->" if c == "mlp" else "bpd,bpgd->g"
                        add((l, c, "mlp", lm), torch.einsum(eq, d_mlp[lm], g))
                g = base.gradients[final]
                add((LOGITS,), torch.einsum("bplhd,bpd->lh", delta, g))
                if mlps:
                    for lm in range(L):
                        add((LOGITS, "mlp", lm), torch.einsum("bpd,bpd->", d_mlp[lm], g))
    clean = _clean_logit_diff(model, ioi)
    unit = len(ioi) * abs(clean)
    rows_out = []
    for key, v in acc.items():
        v = (v / unit).float()
        if key[0] == LOGITS:
            if len(key) == 1:
                rows_out += [(_node(l, h), LOGITS, LOGITS, float(v[l, h]))
                             for l in range(L) for h in range(H)]
            else:
                rows_out.append((_node(key[2]), LOGITS, LOGITS, float(v)))
        elif len(key) == 2:
            l, c = key
            if c == "mlp":
                rows_out += [(_node(ls, h), _node(l), "mlp", float(v[ls, h]))
                             for ls in range(v.shape[0]) for h in range(H)]
            else:
                rows_out += [(_node(ls, h), _node(l, g), c, float(v[ls, h, g]))
                             for ls in range(v.shape[0]) for h in range(H) for g in range(H)]
        else:
            l, c, _, lm = key
            if c == "mlp":
                rows_out.append((_node(lm), _node(l), "mlp", float(v)))
            else:
                rows_out += [(_node(lm), _node(l, g), c, float(v[g])) for g in range(H)]
    edges = pd.DataFrame(rows_out, columns=["sender", "receiver", "input", "score"])
    name = "edge attribution patching" + (" (heads + MLPs)" if mlps else " (heads)")
    return MethodResult(name, widest_path_scores(edges, L, H), threshold,
                        time.perf_counter() - t0, clean, edges=edges,
                        cpu_seconds=time.process_time() - c0,
                        note="EAP: gradient x (p_ABC - p_IOI) writes, summed over positions")


# ----------------------------------------------------------------------------- head scores


def _order(node: str) -> float:
    """Topological key: head l.h -> 2l, MLP l -> 2l + 1, logits -> inf."""
    if node == LOGITS:
        return float("inf")
    if node.startswith("MLP"):
        return 2 * int(node.split()[1]) + 1
    return 2 * int(node.split(".")[0])


def widest_path_scores(edges: pd.DataFrame, n_layers: int, n_heads: int,
                       column: str = "score") -> Float[Tensor, "layer head"]:
    """For each head, the largest t such that a chain of edges with ``|column| >= t`` leads
    from it to the logits (0 when none does): the head is in the circuit "edges with
    |score| >= t, connected to the logits" exactly when its value is >= t.

    ``edges`` has columns ``sender``, ``receiver`` (node names ``"l.h"``, ``"MLP l"``,
    ``"logits"``) and ``column``; several edges between two nodes (q/k/v, positions) count as
    their best one.
    """
    width: dict[str, float] = {LOGITS: float("inf")}
    if len(edges):
        best = edges.assign(w=edges[column].abs()).groupby(["sender", "receiver"])["w"].max()
        out: dict[str, list[tuple[str, float]]] = {}
        for (snd, rcv), w in best.items():
            out.setdefault(snd, []).append((rcv, float(w)))
        for node in sorted(out, key=_order, reverse=True):
            width[node] = max((min(w, width.get(r, 0.0)) for r, w in out[node]), default=0.0)
    scores = torch.zeros(n_layers, n_heads)
    for node, w in width.items():
        if node != LOGITS and not node.startswith("MLP"):
            l, h = map(int, node.split("."))
            scores[l, h] = w
    return scores


def kept_edges(edges: pd.DataFrame, threshold: float, column: str = "score") -> pd.DataFrame:
    """The edges with ``|column| >= threshold`` connected to the logits through such edges."""
    keep = edges[edges[column].abs() >= threshold]
    alive, rows = {LOGITS}, []
    for rcv_key in sorted(set(keep["receiver"]), key=_order, reverse=True):
        if rcv_key not in alive:
            continue
        inc = keep[keep["receiver"] == rcv_key]
        rows.append(inc)
        alive |= set(inc["sender"])
    return pd.concat(rows) if rows else keep.iloc[:0]


# ----------------------------------------------------------------------------- (c) ACDC


def acdc(model, ioi: IOIDataset, abc: IOIDataset, tau: float = ACDC_TAU,
         tau_min: float | None = ACDC_TAU_MIN, inputs: str = "qkv",
         positions: Sequence[str] = POSITIONS,
         caches: patching.PathPatchingCaches | None = None,
         progress: bool | None = None) -> MethodResult:
    """(c) ACDC-style pruning from the logits backwards with the paper's path patching.

    Walk: the logits are the first receiver. For a receiver, every earlier head is a sender;
    each edge sender -> receiver (for a head receiver: one edge per input in ``inputs`` and
    per named position in ``positions``) is path-patched (sender from p_ABC, Algorithm 1) and
    removed when ``|change of the logit diff| < tau x clean``; the senders of kept edges become
    receivers, latest layer first. The walk runs at ``min(tau, tau_min)`` (``tau_min=None``:
    at ``tau``), and :func:`kept_edges` / the scores give the circuit at any larger tau.

    ``edges``: every edge tested, columns ``sender``, ``receiver``, ``input``, ``position``,
    ``score`` (signed change, fraction of the clean logit diff).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    walk_tau = tau if tau_min is None else min(tau, tau_min)
    caches = caches or patching.cache_path_patching(model, ioi, abc)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    clean = None
    rows: list[tuple] = []
    r = patching.path_patch(model, ioi, abc, "logits", caches=caches, progress=False)
    clean = r.clean
    rel = r.relative
    pending: set[Head] = set()
    for l in range(L):
        for h in range(H):
            rows.append((_node(l, h), LOGITS, LOGITS, "END", float(rel[l, h])))
            if abs(float(rel[l, h])) >= walk_tau:
                pending.add((l, h))
    done: set[Head] = set()
    while pending:
        rcv = max(pending)  # latest layer first
        pending.discard(rcv)
        done.add(rcv)
        senders = [(l, h) for l in range(rcv[0]) for h in range(H)]
        if not senders:
            continue
        for c in inputs:
            for pos in positions:
                res = patching.path_patch(model, ioi, abc, [rcv], receiver_input=c, position=pos,
                                          senders=senders, caches=caches, progress=False)
                for (snd,), v in zip(res.senders, res.relative.tolist()):
                    rows.append((_node(*snd), _node(*rcv), c, pos, v))
                    if abs(v) >= walk_tau and snd not in done:
                        pending.add(snd)
    edges = pd.DataFrame(rows, columns=["sender", "receiver", "input", "position", "score"])
    return MethodResult("ACDC-style path-patching pruning (heads)",
                        widest_path_scores(edges, L, H), tau, time.perf_counter() - t0, clean,
                        cpu_seconds=time.process_time() - c0,
                        edges=edges, valid_from=walk_tau,
                        note=f"walk at tau = {walk_tau:g}; receivers' {inputs} at {', '.join(positions)}")


# ----------------------------------------------------------------------------- scoring


def references(model, classes: Mapping[str, object] | None = None) -> dict[str, dict[str, list[Head]]]:
    """The reference circuits available for this model, each as class name -> heads:
    ``"planted"`` (``model.planted``, when the model has one), ``"manual"`` (the classes found
    by hand, e.g. :func:`ioi_helpers.discovery.all_classes`; empty classes dropped) and
    ``"paper"`` (:data:`ioi_helpers.paper.CIRCUIT`, only where the paper's head indices name
    this model's heads: :func:`ioi_helpers.models.has_paper_layout`, GPT-2 small and
    ``gpt2-planted``)."""
    out: dict[str, dict[str, list[Head]]] = {}
    planted = getattr(model, "planted", None)
    if planted:
        out["planted"] = {k: [tuple(h) for h in v] for k, v in planted.items() if len(v)}
    if classes:
        manual = {k: [tuple(h) for h in getattr(c, "heads", c)] for k, c in classes.items()}
        manual = {k: v for k, v in manual.items() if v}
        if manual:
            out["manual"] = manual
    if models.has_paper_layout(model):
        out["paper"] = {k: list(v) for k, v in paper.CIRCUIT.items()}
    return out


def top_heads(scores: Float[Tensor, "layer head"], k: int) -> list[Head]:
    """The ``k`` heads with the highest scores, best first."""
    idx = scores.flatten().argsort(descending=True)[:k].tolist()
    return [divmod(i, scores.shape[1]) for i in idx]


def union(classes: Mapping[str, Iterable[Head]]) -> list[Head]:
    return sorted({tuple(h) for heads in classes.values() for h in heads})


def score_table(results: Sequence[MethodResult], refs: Mapping[str, Mapping[str, list[Head]]]
                ) -> pd.DataFrame:
    """One row per method and reference: AUC, precision and recall at the default
    threshold, heads selected, wall and CPU seconds."""
    rows = []
    for r in results:
        for ref, classes in refs.items():
            y = roc.labels_for(tuple(r.scores.shape), union(classes))
            pr = roc.precision_recall(r.scores.numpy(), y, r.threshold)
            rows.append({"method": r.method, "reference": ref, "AUC": roc.auc(r.scores.numpy(), y),
                         "threshold": r.threshold, "precision": pr["precision"],
                         "recall": pr["recall"], "selected": pr["selected"],
                         "reference heads": pr["reference size"], "seconds": r.seconds,
                         "CPU seconds": r.cpu_seconds})
    return pd.DataFrame(rows)


def roc_frame(results: Sequence[MethodResult], refs: Mapping[str, Mapping[str, list[Head]]]
              ) -> pd.DataFrame:
    """Long table of every ROC curve: method, reference, threshold, fpr, tpr."""
    frames = []
    for r in results:
        for ref, classes in refs.items():
            y = roc.labels_for(tuple(r.scores.shape), union(classes))
            c = roc.roc_curve(r.scores.numpy(), y)
            c.insert(0, "reference", ref)
            c.insert(0, "method", r.method)
            frames.append(c)
    return pd.concat(frames, ignore_index=True)


def class_recall(results: Sequence[MethodResult], classes: Mapping[str, list[Head]]) -> pd.DataFrame:
    """Per class and method at the default threshold: heads found, heads missed with their
    scores (so a miss can be read as "just under the threshold" or "invisible")."""
    rows = []
    for r in results:
        sel = set(r.selected())
        for name, heads in classes.items():
            missed = [h for h in heads if tuple(h) not in sel]
            rows.append({"class": name, "method": r.method, "heads": len(heads),
                         "found": len(heads) - len(missed),
                         "missed": ", ".join(f"{l}.{h} ({float(r.scores[l, h]):.3f})"
                                             for l, h in missed),
                         "threshold": r.threshold})
    return pd.DataFrame(rows)


def linearity(model, ioi: IOIDataset, abc: IOIDataset, attribution: MethodResult,
              heads: Sequence[Head] | None = None) -> pd.DataFrame:
    """Attribution's first-order estimate beside the real activation patching it estimates
    (the head's output patched from p_ABC at all positions, one forward pass per head, the
    same quantity as ``patching.act_patch_heads(..., "z")``), both as fractions of the clean
    logit diff: where they disagree, the head's effect is nonlinear."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads = list(heads) if heads else [(l, h) for l in range(L) for h in range(H)]
    layers = sorted({l for l, _ in heads})
    src = hooks.cache_activations(model, abc.tokens, [hooks.hook_name("z", l) for l in layers])
    rows = []
    for l, h in heads:
        value = src[hooks.hook_name("z", l)]

        def patch(z, hook, h=h, value=value):
            z = z.clone()
            z[:, :, h] = value[:, :, h]
            return z

        end_logits, _ = hooks.run(model, ioi.tokens, ioi.pos["END"],
                                  fwd_hooks=[(hooks.hook_name("z", l), patch)])
        actual = metrics.logit_diff(end_logits, ioi).mean().item()
        rows.append({"head": f"{l}.{h}", "attribution estimate": float(attribution.effect[l, h]),
                     "activation patching": (actual - attribution.clean) / abs(attribution.clean)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- edges, one at a time


def edge_patching_scores(model, ioi: IOIDataset, abc: IOIDataset, sets_per_forward: int = 64,
                         corrupted: dict[str, Tensor] | None = None) -> Float[Tensor, "sender receiver"]:
    """Every edge of the edge graph (:mod:`ioi_helpers.edges`) patched alone: the change of the
    mean logit difference when that one edge carries its sender's p_ABC output and every other
    edge is intact (ACDC's edge test against the unpruned model, at edge level, all positions).

    Brute force, one edge set per edge; ``sets_per_forward`` edge sets run as one batch of
    prompt copies (:func:`ioi_helpers.edges.patched_logit_diffs` with a stack).

    Args:
        model: the (bridge) model.
        ioi, abc: matched p_IOI / p_ABC.
        sets_per_forward: edge sets (copies of the prompts) per forward, >= 1.
        corrupted: :func:`ioi_helpers.edges.sender_activations` of ``abc``, to share.

    Returns:
        ``[n_senders, n_receivers]`` signed changes (patched - clean) in logit-diff units, 0 off
        the graph's edges.
    """
    from . import edges as E

    if not isinstance(sets_per_forward, int) or sets_per_forward < 1:
        raise ValueError(f"sets_per_forward must be an int >= 1, got {sets_per_forward!r}")
    graph = E.graph_of(model)
    corrupted = corrupted if corrupted is not None else E.sender_activations(model, abc)
    clean = E.patched_logit_diffs(model, ioi, abc, graph.mask, corrupted).mean()
    idx = graph.mask.nonzero()
    out = torch.zeros(graph.mask.shape)
    for start in range(0, len(idx), sets_per_forward):
        chunk = idx[start:start + sets_per_forward]
        keep = graph.mask.repeat(len(chunk), 1, 1)
        keep[torch.arange(len(chunk)), chunk[:, 0], chunk[:, 1]] = False
        ld = E.patched_logit_diffs(model, ioi, abc, keep, corrupted).mean(1)
        out[chunk[:, 0], chunk[:, 1]] = (ld - clean).float()
    return out


class Timer:
    """Wall seconds of named steps: ``with timer("EAP"): ...``, then ``timer.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def against(self, unit: str) -> pd.DataFrame:
        """Each step's seconds and its ratio to the step ``unit`` (e.g. one forward pass)."""
        base = self.seconds[unit]
        return pd.DataFrame([{"step": k, "seconds": v, f"x {unit}": v / base}
                             for k, v in self.seconds.items()])
