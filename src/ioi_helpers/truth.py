"""Scoring discovered head classes against a known circuit.

A known circuit is a mapping from class name (spelled as :class:`ioi_helpers.discovery.HeadClass`
names it: "Name Mover", "S-Inhibition", ...) to heads as ``(layer, head)``. Two exist here:

* the heads planted in ``ioi-planted`` and ``gpt2-planted`` (``model.planted``, see
  :mod:`ioi_helpers.planted` and :mod:`ioi_helpers.planted_gpt2`): an exact ground truth,
  because the weights were built to put each class there;
* the paper's 26 heads (:data:`ioi_helpers.paper.CIRCUIT`): the authors' answer for GPT-2 small,
  meaningful only on GPT-2 small.

Precision is the share of discovered heads that are in the reference class; recall the share
of the reference class that was discovered. An empty discovered class has precision 1 by
convention only when the reference is empty too (nothing claimed, nothing missed); otherwise
precision of an empty set is reported as NaN (undefined), and recall carries the miss.

The planted edges (:func:`planted_edge_table`, :func:`planted_edge_mask`) are the edge-level
truth of both planted models, read off their constructions (comment above
:data:`CONSTRUCTIONS`).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd

Head = tuple[int, int]


def _fmt(heads: Iterable[Head]) -> str:
    return ", ".join(f"{l}.{h}" for l, h in sorted(heads)) or "none"


def precision_recall(found: Iterable[Head], truth: Iterable[Head]) -> tuple[float, float]:
    """Precision and recall of ``found`` against ``truth`` (see the module docstring for the
    empty cases)."""
    f, t = {tuple(h) for h in found}, {tuple(h) for h in truth}
    hit = len(f & t)
    if not f:
        precision = 1.0 if not t else math.nan
    else:
        precision = hit / len(f)
    recall = hit / len(t) if t else (1.0 if not f else 0.0)
    return precision, recall


def class_heads(classes: Mapping[str, object]) -> dict[str, list[Head]]:
    """``{name: heads}`` from a mapping of HeadClass objects or of head lists."""
    out = {}
    for name, value in classes.items():
        heads = getattr(value, "heads", value)
        out[name] = sorted(tuple(int(x) for x in h) for h in heads)
    return out


def compare(found: Mapping[str, object], truth: Mapping[str, Iterable[Head]],
            names: Iterable[str] | None = None, truth_label: str = "planted") -> pd.DataFrame:
    """One row per class: the discovered heads, the reference heads, missing and extra heads,
    precision, recall, and ``exact`` (the two sets are equal).

    ``found`` maps class names to HeadClass objects or head lists; ``names`` restricts and
    orders the rows (default: the classes of ``found``, in its order).
    """
    found_heads = class_heads(found)
    rows = []
    for name in (list(names) if names is not None else list(found_heads)):
        f = set(found_heads.get(name, []))
        t = {tuple(h) for h in truth.get(name, [])}
        p, r = precision_recall(f, t)
        rows.append({"class": name, "discovered": _fmt(f), truth_label: _fmt(t),
                     "missing": _fmt(t - f) if t - f else "", "extra": _fmt(f - t) if f - t else "",
                     "precision": p, "recall": r, "exact": f == t})
    return pd.DataFrame(rows)


def against_planted(model, classes) -> pd.DataFrame | None:
    """:func:`compare` of some discovered classes (HeadClass objects, or a mapping of them) with
    the heads planted in ``model`` (``model.planted``); None for a model with no planted
    circuit (GPT-2 small, gpt2-random, ioi-tiny)."""
    planted = getattr(model, "planted", None)
    if not planted:
        return None
    found = classes if isinstance(classes, Mapping) else {c.name: c for c in classes}
    return compare(found, planted)


# ----------------------------------------------------------------------------- planted edges
#
# Which edges of the edge graph (:mod:`ioi_helpers.edges`) carry the task's signal in a planted
# model, read off its construction, not off any method: the tables ``SIGNAL_FEATURES``,
# ``WRITES`` and ``READS`` of :mod:`ioi_helpers.planted` (ioi-planted) and
# :mod:`ioi_helpers.planted_gpt2` (gpt2-planted). A sender writes residual features; a
# receiver's q, k or v matrix, or the logits, read some of them. An edge carries signal when
# the sender writes a feature that the receiver reads and that feature differs between p_IOI
# and p_ABC, and when it lies on a path of such edges from the input to the logits (a head
# whose output no listed head reads, such as gpt2-planted's ``*_junk`` decoys, passes nothing
# on, so the edges into it are not listed).
#
# Only heads written by formula are listed: the planted classes, and in gpt2-planted the decoys
# (``model.planted_decoys``) and the background copiers (``model.planted_background``, small
# by design). The random distractor heads and MLPs read and write every feature a little, so
# edges through them carry a small signal too: the truth leaves them out, as noise.

#: The planted models with a construction-derived edge truth (model name prefixes).
CONSTRUCTIONS = ("ioi-planted", "gpt2-planted")
_COLUMNS = ["sender", "receiver", "input", "name", "features", "sender class", "receiver class",
            "sender kind", "receiver kind"]


def _tables(construction: str):
    """The module holding a construction's ``SIGNAL_FEATURES``, ``WRITES`` and ``READS``."""
    from . import planted, planted_gpt2

    if construction not in CONSTRUCTIONS:
        raise ValueError(f"no planted edge truth for {construction!r}; expected one of {list(CONSTRUCTIONS)}")
    return planted if construction == "ioi-planted" else planted_gpt2


def planted_edge_table(planted: Mapping[str, Iterable[Head]], n_layers: int, n_heads: int,
                       construction: str = "ioi-planted", decoys: Mapping[str, Head] | None = None,
                       background: Iterable[Head] = ()) -> pd.DataFrame:
    """The planted edges of a planted layout, one row per edge of the edge graph that carries
    signal (module comment above :data:`CONSTRUCTIONS`).

    Args:
        planted: class name -> heads, as ``model.planted`` (or ``planted.choose_heads(seed)``).
        n_layers, n_heads: the model's shape.
        construction: ``"ioi-planted"`` or ``"gpt2-planted"``: whose read and write tables.
        decoys: decoy name -> head, as ``model.planted_decoys`` (gpt2-planted; a partner
            ``"name~"`` reads and writes as ``"name"``).
        background: the background heads, as ``model.planted_background`` (gpt2-planted).

    Returns:
        Columns ``sender``, ``receiver`` (MIB node names), ``input`` (``q``, ``k``, ``v`` or
        ``logits``), ``name`` (MIB's edge name), ``features`` (the signal features carried,
        comma-separated), ``sender class`` and ``receiver class`` (``input``, ``logits``, the
        planted class, the decoy's name or ``background``), ``sender kind`` and ``receiver
        kind`` (``input``, ``logits``, ``planted``, ``decoy`` or ``background``). Only pairs
        where the sender is upstream of the receiver (an edge of the graph), on a path of
        such pairs from the input to the logits, are listed.
    """
    from . import edges as E

    T = _tables(construction)
    node: dict[Head, tuple[str, str]] = {}  # head -> (class, kind)
    entries = [(c, "planted", hs) for c, hs in planted.items()]
    entries += [(name, "decoy", [h]) for name, h in (decoys or {}).items()]
    entries += [("background", "background", list(background))] if background else []
    known = set(T.WRITES) & set(T.READS)
    for cls, kind, heads in entries:
        if (cls if kind == "planted" else cls.rstrip("~")) not in known:
            raise ValueError(f"unknown {'planted class' if kind == 'planted' else kind} {cls!r} "
                             f"for {construction}; expected one of {sorted(known)}")
        for h in heads:
            h = (int(h[0]), int(h[1]))
            if h in node:
                raise ValueError(f"head {h[0]}.{h[1]} is both {node[h][0]!r} and {cls!r}")
            node[h] = (cls, kind)
    graph = E.edge_graph(n_layers, n_heads)
    heads = sorted(node.items())
    senders = [("input", "input", "input")] + [(f"a{l}.h{h}", c, k) for (l, h), (c, k) in heads]
    receivers = [(f"a{l}.h{h}<{x}>", c, k, x) for (l, h), (c, k) in heads for x in "qkv"]
    receivers.append((E.LOGITS, "logits", "logits", "logits"))
    rows = []
    for snd, s_cls, s_kind in senders:
        s = E.sender_index(n_heads, snd)
        for rcv, r_cls, r_kind, x in receivers:
            carried = T.WRITES[s_cls.rstrip("~")] & T.READS[r_cls.rstrip("~")][x] & T.SIGNAL_FEATURES
            if carried and bool(graph.mask[s, E.receiver_index(n_layers, n_heads, rcv)]):
                rows.append({"sender": snd, "receiver": rcv[:-3] if rcv.endswith(">") else rcv,
                             "input": x, "name": E._edge_name(snd, rcv),
                             "features": ", ".join(sorted(carried)), "sender class": s_cls,
                             "receiver class": r_cls, "sender kind": s_kind, "receiver kind": r_kind})
    table = pd.DataFrame(rows, columns=_COLUMNS)
    # keep the edges on a path input -> logits: rows run sender-major in forward order, so one
    # pass each way settles which nodes the input reaches and which reach the logits
    fed = {"input"}
    for snd, rcv in zip(table["sender"], table["receiver"]):
        if snd in fed:
            fed.add(rcv)
    feeds = {"logits"}
    for snd, rcv in zip(table["sender"][::-1], table["receiver"][::-1]):
        if rcv in feeds:
            feeds.add(snd)
    keep = table["sender"].isin(fed) & table["receiver"].isin(feeds)
    return table[keep].reset_index(drop=True)


def model_edge_table(model) -> pd.DataFrame | None:
    """:func:`planted_edge_table` of a planted model (``model.planted``, and for gpt2-planted
    ``model.planted_decoys`` and ``model.planted_background``), or None for a model with no
    construction the tables describe (GPT-2 small, gpt2-random, ioi-tiny, a local model).

    Args:
        model: the (bridge) model.
    """
    name = str(getattr(model, "ioi_model_name", ""))
    construction = next((c for c in CONSTRUCTIONS if name.startswith(c)), None)
    if construction is None or not getattr(model, "planted", None):
        return None
    extra = {} if construction == "ioi-planted" else {
        "decoys": model.planted_decoys, "background": model.planted_background}
    return planted_edge_table(model.planted, model.cfg.n_layers, model.cfg.n_heads, construction, **extra)


def edge_table_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (sender class, receiver class, input) of a :func:`planted_edge_table`: the
    features carried and the number of edges, in the table's (forward) order."""
    keys = ["sender class", "receiver class", "input"]
    grouped = table.groupby(keys, sort=False)
    out = grouped["features"].agg(lambda f: ", ".join(sorted({x for s in f for x in s.split(", ")})))
    return pd.concat([out, grouped.size().rename("edges")], axis=1).reset_index()


def planted_edge_mask(model):
    """``[n_senders, n_receivers]`` booleans: the planted edges of ``model``
    (:func:`model_edge_table`), or None for a model with no construction the tables describe.

    Args:
        model: the (bridge) model.
    """
    import torch

    from . import edges as E

    table = model_edge_table(model)
    if table is None:
        return None
    L, H = model.cfg.n_layers, model.cfg.n_heads
    mask = torch.zeros(E.edge_graph(L, H).mask.shape, dtype=torch.bool)
    for name in table["name"]:
        snd, rcv = name.split("->")
        mask[E.sender_index(H, snd), E.receiver_index(L, H, rcv)] = True
    return mask
