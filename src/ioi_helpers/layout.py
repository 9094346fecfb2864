"""What the paper's head layout licenses on a model (chapter 7 and the scorecard).

On a model where the paper's head indices name the model's heads
(:func:`ioi_helpers.models.has_paper_layout`: GPT-2 small, and ``gpt2-planted``, which plants
the paper's heads at the paper's positions), the authors' lists can be evaluated as they are:
their circuit (:data:`ioi_helpers.paper.CIRCUIT`, the list that made the published numbers),
their naive circuit and their minimality K sets. The circuit assembled from the book's own
discovered classes is then evaluated beside it as a named variant. On any other model the
paper's indices name unrelated heads, and the discovered circuit is the only one.

Kept positions, as the authors' code keeps them (``ioi_circuit_extraction.py``): a dict
``RELEVANT_TOKENS`` filled class by class, "name mover" (Backup Name Movers included),
"negative" and "s2 inhibition" at END, then "induction" and "duplicate token" at S2, then
"previous token" at S+1. A head listed in two classes is therefore kept at **one** position,
that of the later class in this order (:func:`authors_kept`). The book's own assembler
(:func:`ioi_helpers.discovery.circuit`) keeps such a head at both positions;
:func:`in_two_classes` names the heads where the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import pandas as pd

from . import models, paper, truth

Head = tuple[int, int]

# the order in which the authors' RELEVANT_TOKENS assigns positions (a later class overwrites)
AUTHORS_CLASS_ORDER = ("Name Mover", "Backup Name Mover", "Negative Name Mover", "S-Inhibition",
                       "Induction", "Duplicate Token", "Previous Token")


def _heads_by_class(classes: Mapping[str, object]) -> dict[str, list[Head]]:
    return {name: [tuple(int(x) for x in h) for h in getattr(c, "heads", c)] for name, c in classes.items()}


def authors_kept(classes: Mapping[str, object]) -> dict[Head, list[str]]:
    """The circuit of some classes (class name -> heads, or HeadClass objects) with each head
    kept where the authors' code keeps it: at its class's position (:data:`paper.KEPT_AT`);
    a head in two classes at the position of the later class in :data:`AUTHORS_CLASS_ORDER`."""
    by_class = _heads_by_class(classes)
    unknown = set(by_class) - set(AUTHORS_CLASS_ORDER)
    if unknown:
        raise ValueError(f"not a class of the paper: {sorted(unknown)}")
    out: dict[Head, list[str]] = {}
    for name in AUTHORS_CLASS_ORDER:
        for head in by_class.get(name, []):
            out[head] = [paper.KEPT_AT[name]]
    return dict(sorted(out.items()))


def in_two_classes(classes: Mapping[str, object]) -> dict[Head, list[str]]:
    """Heads listed in more than one class -> those classes (in :data:`AUTHORS_CLASS_ORDER`)."""
    by_class = _heads_by_class(classes)
    seen: dict[Head, list[str]] = {}
    for name in AUTHORS_CLASS_ORDER:
        for head in by_class.get(name, []):
            seen.setdefault(head, []).append(name)
    return {h: names for h, names in sorted(seen.items()) if len(names) > 1}


@dataclass
class Evaluated:
    """The circuit whose numbers a chapter reports as its headline, and the variant beside it.

    ``source`` is ``"authors"`` (the paper's list, on a model with the paper's layout) or
    ``"discovered"`` (the classes found by chapters 2-6). ``variant`` is the discovered
    circuit when the headline is the authors' (else None); ``same`` says whether the two
    circuits are equal (heads and kept positions)."""

    source: str
    label: str
    classes: dict[str, list[Head]]
    circuit: dict[Head, list[str]]
    variant_classes: dict[str, list[Head]] | None = None
    variant: dict[Head, list[str]] | None = None
    same: bool = True
    notes: list[str] = field(default_factory=list)


def evaluated_circuit(model, discovered_classes: Mapping[str, object],
                      discovered: Mapping[Head, list[str]]) -> Evaluated:
    """The authors' circuit (:data:`paper.CIRCUIT`, kept by :func:`authors_kept`) as the
    headline and ``discovered`` (the book's assembly of ``discovered_classes``) as a named
    variant where the model has the paper's head layout; else ``discovered`` alone."""
    found = {n: h for n, h in _heads_by_class(discovered_classes).items() if h}
    discovered = {tuple(h): list(p) for h, p in discovered.items()}
    if not models.has_paper_layout(model):
        return Evaluated("discovered", "the discovered circuit", found, discovered)
    authors = {n: list(h) for n, h in paper.CIRCUIT.items()}
    circ = authors_kept(authors)
    notes = [f"{paper.head_name(h)} is in {' and '.join(ns)}: kept at "
             f"{' and '.join(discovered[h])} in the discovered circuit; the authors' code would keep it at "
             f"{authors_kept({n: [h] for n in ns})[h][0]} only" for h, ns in in_two_classes(found).items()]
    return Evaluated("authors", "the authors' circuit (paper.CIRCUIT)", authors, circ,
                     variant_classes=found, variant=discovered, same=circ == discovered, notes=notes)


def naive_circuit(model, discovered_classes: Mapping[str, object]) -> tuple[dict[str, list[Head]], dict, str]:
    """The naive circuit of Sec. 4: the authors' 13 heads (:data:`paper.NAIVE_CIRCUIT`) where
    the model has the paper's layout, else the classes of the first path-patching steps
    (Name, S-Inhibition, Induction, Duplicate Token, Previous Token; no Negative or Backup
    Name Movers). Returns (classes, circuit, label)."""
    if models.has_paper_layout(model):
        classes = {n: list(h) for n, h in paper.NAIVE_CIRCUIT.items() if h}
        return classes, authors_kept(classes), "naive (the authors' 13 heads)"
    first = ("Name Mover", "S-Inhibition", "Induction", "Duplicate Token", "Previous Token")
    by_class = _heads_by_class(discovered_classes)
    classes = {n: by_class[n] for n in first if by_class.get(n)}
    kept: dict[Head, list[str]] = {}
    for n, heads in classes.items():  # discovery.circuit's rule: a head in two classes at both
        for h in heads:
            if paper.KEPT_AT[n] not in kept.setdefault(h, []):
                kept[h].append(paper.KEPT_AT[n])
    return classes, dict(sorted(kept.items())), "naive (first steps only)"


def minimality_k(model, circuit: Iterable[Head], own_rule: Mapping[Head, tuple],
                 own_variant: Mapping[Head, tuple], k_sets: str, variant_sets: str) -> dict:
    """K for each head of ``circuit``: the authors' sets (:data:`paper.MINIMALITY_K`
    ``[k_sets]``, ARENA's ``[variant_sets]`` beside them) where the model has the paper's
    layout, a head they do not list falling back to ``own_rule`` / ``own_variant``; else the
    two rules on the model's own classes. Returns ``{"k", "variant", "source", "variant_name",
    "authors"}`` (``authors``: whether the authors' sets were used)."""
    circuit = list(circuit)
    if models.has_paper_layout(model):
        main, var = paper.MINIMALITY_K[k_sets], paper.MINIMALITY_K[variant_sets]
        return {"k": {v: main.get(v, own_rule.get(v, ())) for v in circuit},
                "variant": {v: var.get(v, own_variant.get(v, ())) for v in circuit},
                "source": "the authors' minimality.py K sets (their rule for heads outside the paper's circuit)",
                "variant_name": "ARENA's K sets", "authors": True}
    return {"k": {v: own_rule.get(v, ()) for v in circuit}, "variant": {v: own_variant.get(v, ()) for v in circuit},
            "source": "the authors' rule (minimality.py) on this model's classes",
            "variant_name": "K = the other heads of the head's 7-class class", "authors": False}


def head_match(found: Mapping[str, Iterable[Head]], reference: Mapping[str, Iterable[Head]],
               label: str) -> tuple[pd.DataFrame, dict]:
    """Class-by-class comparison of recorded classes with a reference circuit
    (:func:`ioi_helpers.truth.compare`, reference column ``label``), over the reference's
    classes, and its summary: ``heads`` (reference heads found in their own class),
    ``of_heads``, ``classes`` (classes equal to the reference exactly), ``of_classes``,
    ``not_run`` (reference classes with nothing recorded)."""
    names = [n for n in reference if len(list(reference[n]))]
    recorded = {n: found[n] for n in names if n in found}
    table = truth.compare(recorded, reference, names, truth_label=label)
    hit = sum(len({tuple(h) for h in recorded.get(n, [])} & {tuple(h) for h in reference[n]}) for n in names)
    summary = {"heads": hit, "of_heads": sum(len({tuple(h) for h in reference[n]}) for n in names),
               "classes": int(table["exact"].sum()), "of_classes": len(names),
               "not_run": [n for n in names if n not in found]}
    return table, summary


def differences(ev: Evaluated) -> pd.DataFrame:
    """The classes where the discovered variant and the authors' circuit differ: one row each
    (discovered heads, the authors', missing and extra heads); empty when they agree or when
    there is no variant."""
    if ev.variant_classes is None:
        return pd.DataFrame(columns=["class", "discovered", "authors' circuit", "missing", "extra"])
    names = [n for n in AUTHORS_CLASS_ORDER if ev.classes.get(n) or ev.variant_classes.get(n)]
    table = truth.compare(ev.variant_classes, ev.classes, names, truth_label="authors' circuit")
    return table[~table["exact"]][["class", "discovered", "authors' circuit", "missing", "extra"]]
