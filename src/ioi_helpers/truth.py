"""Scoring discovered head classes against a known circuit.

A known circuit is a mapping from class name (spelled as :class:`ioi_helpers.discovery.HeadClass`
names it: "Name Mover", "S-Inhibition", ...) to heads as ``(layer, head)``. Two exist here:

* the heads planted in ``ioi-planted`` (``model.planted``, see :mod:`ioi_helpers.planted`): an
  exact ground truth, because the weights were built to put each class there;
* the paper's 26 heads (:data:`ioi_helpers.paper.CIRCUIT`): the authors' answer for GPT-2 small,
  meaningful only on GPT-2 small.

Precision is the share of discovered heads that are in the reference class; recall the share
of the reference class that was discovered. An empty discovered class has precision 1 by
convention only when the reference is empty too (nothing claimed, nothing missed); otherwise
precision of an empty set is reported as NaN (undefined), and recall carries the miss.
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
# Which edges of the edge graph (:mod:`ioi_helpers.edges`) carry the task's signal in
# ``ioi-planted``, read off the construction (:mod:`ioi_helpers.planted`, ``head_weights``), not
# off any method. A sender writes residual features; a receiver's q, k or v matrix reads some of
# them. An edge carries signal when the sender writes a feature that the receiver reads and
# that feature differs between p_IOI and p_ABC (p_ABC replaces the three names by three others,
# so every feature derived from which names sit where differs; positions, the anchor and the
# "is a name" bit are the same in both).

#: Features whose value differs between p_IOI and p_ABC (planted.py's names, ``TOK`` ... ``OUT``).
SIGNAL_FEATURES = frozenset({"TOK", "PREV", "DUP", "flag", "DPOS", "SINH", "SPOS", "OUT"})

#: What each sender writes (planted.py: the embedding, then each class's O matrix).
PLANTED_WRITES: dict[str, frozenset[str]] = {
    "input": frozenset({"anchor", "POS", "TOK", "isname"}),
    "Previous Token": frozenset({"PREV"}),
    "Duplicate Token": frozenset({"DUP", "flag", "DPOS"}),
    "Induction": frozenset({"DUP", "flag", "DPOS"}),
    "S-Inhibition": frozenset({"SINH", "SPOS"}),
    "Name Mover": frozenset({"OUT"}),
    "Negative Name Mover": frozenset({"OUT"}),
    "Backup Name Mover": frozenset({"OUT"}),
}

_NAME_MOVER_READS = {"q": frozenset({"anchor", "SINH", "SPOS"}),
                     "k": frozenset({"isname", "TOK", "POS"}), "v": frozenset({"TOK"})}
#: What each class's q, k and v matrices read (planted.py's ``head_weights``: the rows of Q,
#: K, V that are set; ``anchor`` for the constant terms and the sinks), and what the logits
#: read (the unembedding: ``OUT`` along each name's code, plus a constant from the anchor).
PLANTED_READS: dict[str, dict[str, frozenset[str]]] = {
    "Previous Token": {"q": frozenset({"POS"}), "k": frozenset({"POS"}), "v": frozenset({"TOK"})},
    "Duplicate Token": {"q": frozenset({"TOK", "POS", "anchor"}), "k": frozenset({"TOK", "POS"}),
                        "v": frozenset({"TOK", "POS", "anchor"})},
    "Induction": {"q": frozenset({"TOK", "anchor"}), "k": frozenset({"PREV", "POS"}),
                  "v": frozenset({"PREV", "POS", "anchor"})},
    "S-Inhibition": {"q": frozenset({"anchor"}), "k": frozenset({"flag", "isname", "POS"}),
                     "v": frozenset({"DUP", "DPOS"})},
    "Name Mover": _NAME_MOVER_READS,
    "Negative Name Mover": _NAME_MOVER_READS,
    "Backup Name Mover": {**_NAME_MOVER_READS,
                          "q": frozenset({"anchor", "SINH", "SPOS", "OUT"})},
    "logits": {"logits": frozenset({"OUT", "anchor"})},
}

def _is_ioi_planted(model) -> bool:
    return str(getattr(model, "ioi_model_name", "")).startswith("ioi-planted")


def planted_edge_table(planted: Mapping[str, Iterable[Head]], n_layers: int,
                       n_heads: int) -> pd.DataFrame:
    """The planted edges of an ``ioi-planted`` layout, one row per edge of the edge graph that
    carries signal (module comment above :data:`SIGNAL_FEATURES`).

    Args:
        planted: class name -> heads, as ``model.planted`` (or ``planted.choose_heads(seed)``).
        n_layers, n_heads: the model's shape.

    Returns:
        Columns ``sender``, ``receiver`` (MIB node names), ``input`` (``q``, ``k``, ``v`` or
        ``logits``), ``name`` (MIB's edge name), ``features`` (the signal features carried,
        comma-separated), ``sender class`` and ``receiver class`` (``input``, ``logits`` or the
        planted class). Only pairs where the sender is upstream of the receiver (an edge of
        the graph) are listed.
    """
    from . import edges as E

    role: dict[Head, str] = {}
    for cls, heads in planted.items():
        if cls not in PLANTED_WRITES:
            raise ValueError(f"unknown planted class {cls!r}; expected one of {sorted(PLANTED_WRITES)}")
        for h in heads:
            role[(int(h[0]), int(h[1]))] = cls
    graph = E.edge_graph(n_layers, n_heads)
    senders = [("input", "input")] + [(f"a{l}.h{h}", c) for (l, h), c in sorted(role.items())]
    receivers = [(f"a{l}.h{h}<{x}>", c, x) for (l, h), c in sorted(role.items()) for x in "qkv"]
    receivers.append((E.LOGITS, "logits", "logits"))
    rows = []
    for snd, s_cls in senders:
        s = E.sender_index(n_heads, snd)
        for rcv, r_cls, x in receivers:
            r = E.receiver_index(n_layers, n_heads, rcv)
            carried = PLANTED_WRITES[s_cls] & PLANTED_READS[r_cls][x] & SIGNAL_FEATURES
            if not carried or not bool(graph.mask[s, r]):
                continue
            node = rcv[:-3] if rcv.endswith(">") else rcv
            rows.append({"sender": snd, "receiver": node, "input": x,
                         "name": E._edge_name(snd, rcv),
                         "features": ", ".join(sorted(carried)),
                         "sender class": s_cls, "receiver class": r_cls})
    return pd.DataFrame(rows, columns=["sender", "receiver", "input", "name", "features",
                                       "sender class", "receiver class"])


def planted_edge_mask(model):
    """``[n_senders, n_receivers]`` booleans: the planted edges of ``model``
    (:func:`planted_edge_table` of ``model.planted``), or None for a model that is not an
    ``ioi-planted`` (its construction is the one the table describes; ``gpt2-planted`` adds
    features and decoys that it does not cover).

    Args:
        model: the (bridge) model.
    """
    import torch

    from . import edges as E

    if not _is_ioi_planted(model) or not getattr(model, "planted", None):
        return None
    L, H = model.cfg.n_layers, model.cfg.n_heads
    table = planted_edge_table(model.planted, L, H)
    mask = torch.zeros(E.edge_graph(L, H).mask.shape, dtype=torch.bool)
    for name in table["name"]:
        snd, rcv = name.split("->")
        mask[E.sender_index(H, snd), E.receiver_index(L, H, rcv)] = True
    return mask
