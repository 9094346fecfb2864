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
