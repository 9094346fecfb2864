"""Discovering the circuit's head classes: one function per step of the paper's search.

Each step runs one path-patching experiment (``ioi_helpers.patching.path_patch``) and applies
an explicit rule to its result. The rules are written from the paper's text and figures (each
docstring says which), so that on GPT-2 small they pick the paper's heads; on any other model
they pick whatever that model has, possibly nothing. A step returns a :class:`HeadClass`: the
heads, the printed rule, and a table of every candidate with the numbers the rule looked at.

Steps depend on earlier ones (S-Inhibition heads are found through the Name Movers' queries,
and so on). A chapter that needs an earlier class recomputes it through these functions;
results are cached on disk by model, parameters and the source of the code that computes them
(``$IOI_CACHE_DIR``, default ``~/.cache/ioi-circuit-book``), so recomputing is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from . import dataset as dataset_mod
from . import patching, scores
from .hooks import Head
from .models import get_tokenizer

CACHE_ENV_VAR = "IOI_CACHE_DIR"
_SOURCES = ("discovery.py", "patching.py", "hooks.py", "scores.py", "ablation.py", "dataset.py")

# Thresholds, as fractions of the clean logit difference. See each step's docstring.
NAME_MOVER_EFFECT = 0.05
S_INHIBITION_EFFECT = 0.05
INDUCTION_EFFECT = 0.03
PREVIOUS_TOKEN_EFFECT = 0.03
BACKUP_EFFECT = 0.02


# ----------------------------------------------------------------------------- set-up


@dataclass
class Setup:
    """A model and the matched p_IOI / p_ABC datasets every step uses."""

    model: object
    n_prompts: int = 100
    seed: int = 0
    prepend_bos: bool = False
    template_set: str = "mixed"

    @cached_property
    def ioi(self) -> dataset_mod.IOIDataset:
        return dataset_mod.make_ioi_dataset(get_tokenizer(), self.n_prompts, self.template_set,
                                            seed=self.seed, prepend_bos=self.prepend_bos)

    @cached_property
    def abc(self) -> dataset_mod.IOIDataset:
        return dataset_mod.make_abc_dataset(get_tokenizer(), self.ioi)

    @cached_property
    def caches(self) -> patching.PathPatchingCaches:
        return patching.cache_path_patching(self.model, self.ioi, self.abc)

    @property
    def model_name(self) -> str:
        return getattr(self.model, "ioi_model_name", "unknown")

    def key(self) -> dict:
        return {"model": self.model_name, "n_prompts": self.n_prompts, "seed": self.seed,
                "prepend_bos": self.prepend_bos, "template_set": self.template_set}

    def settings(self) -> dict:
        """What every table states: model, N, BOS, templates, seed."""
        return {"model": self.model_name, "N": self.n_prompts, "prepend_bos": self.prepend_bos,
                "template_set": self.template_set, "seed": self.seed}


# ----------------------------------------------------------------------------- caching


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR, Path.home() / ".cache" / "ioi-circuit-book"))


def _code_hash() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in _SOURCES:
        p = here / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached(step: str, setup: Setup, params: dict, compute: Callable[[], object]):
    """``compute()``, or its stored result for the same model, data, params and code."""
    if setup.model_name.startswith("unknown"):
        return compute()
    payload = json.dumps({"step": step, **setup.key(), **params, "code": _code_hash()},
                         sort_keys=True, default=str)
    path = cache_dir() / f"{step}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # a truncated file from an interrupted run: recompute
            path.unlink(missing_ok=True)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)
    return value


# ----------------------------------------------------------------------------- results


@dataclass
class HeadClass:
    """The outcome of one discovery step."""

    name: str
    heads: list[Head]
    rule: str
    table: pd.DataFrame  # one row per candidate head, with a 'selected' column
    effect: Float[Tensor, "layer head"]  # the path-patching score (relative change)
    receivers: str
    clean: float
    corrupted: float
    kept_at: str = "END"
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        found = ", ".join(f"{l}.{h}" for l, h in self.heads) or "none"
        return f"{self.name} heads: {found}\nRule: {self.rule}"


def _sorted(heads) -> list[Head]:
    return sorted((int(l), int(h)) for l, h in heads)


def _table(effect: Tensor, columns: dict[str, Tensor], selected: list[Head],
           candidates: Sequence[Head] | None = None) -> pd.DataFrame:
    n_layers, n_heads = effect.shape
    heads = candidates or [(l, h) for l in range(n_layers) for h in range(n_heads)]
    rows = []
    for l, h in heads:
        row = {"head": f"{l}.{h}", "layer": l, "index": h, "effect": float(effect[l, h])}
        row.update({k: float(v[l, h]) for k, v in columns.items()})
        row["selected"] = (l, h) in selected
        rows.append(row)
    return pd.DataFrame(rows)


def _path(setup: Setup, receivers, receiver_input: str, position: str,
          base_ablation: Sequence[Head] = ()) -> patching.PathPatchingResult:
    params = {"receivers": receivers if receivers == "logits" else _sorted(receivers),
              "input": receiver_input, "position": position, "ablate": _sorted(base_ablation)}

    def compute():  # the runs of steps A and B only when the result is not on disk
        caches = setup.caches if not base_ablation else None
        return patching.path_patch(setup.model, setup.ioi, setup.abc, receivers=receivers,
                                   receiver_input=receiver_input, position=position,
                                   caches=caches, **_ablation_kwargs(setup, base_ablation))

    return cached("path_patch", setup, params, compute)


def _ablation_kwargs(setup: Setup, heads: Sequence[Head]) -> dict:
    if not heads:
        return {}
    return {"knockout": list(heads)}


# ----------------------------------------------------------------------------- steps


def direct_effects(setup: Setup) -> patching.PathPatchingResult:
    """Path patching from every head to the logits at END (the paper's Fig. 3b)."""
    return _path(setup, "logits", "q", "END")


def attention(setup: Setup, dest: str, src: str) -> Float[Tensor, "layer head"]:
    """Mean attention probability from ``dest`` to ``src`` on p_IOI, per head (cached; one
    forward pass per ``dest`` gives its attention to every named position)."""
    others = tuple(p for p in dataset_mod.POSITIONS if p != dest)
    table = cached("attention", setup, {"from": dest, "to": others},
                   lambda: scores.name_attention(setup.model, setup.ioi, to=others, from_=dest))
    return table[src]


def name_movers(setup: Setup, threshold: float = NAME_MOVER_EFFECT) -> tuple[HeadClass, HeadClass]:
    """Name Movers and Negative Name Movers (Sec. 3.1).

    Experiment: path patching from each head to the logits at END (Fig. 3b). Rule (from Fig. 3b,
    where the three Name Movers are the heads with the largest drops, of more than ~5% of the
    logit difference, and the two Negative Name Movers the heads with the largest rises; and from
    the text: both kinds attend from END to the IO more than to S):

    * Name Mover: effect <= -threshold x clean logit diff, and attention END->IO >
      attention END->S1 + END->S2.
    * Negative Name Mover: effect >= +threshold x clean logit diff, and the same attention
      condition.

    Both are applied only when the clean logit diff is > 0: the effects are fractions of it,
    which mean nothing for a model that does not prefer the IO (e.g. random weights).
    """
    r = direct_effects(setup)
    eff = r.relative
    att_io = attention(setup, "END", "IO")
    att_s = attention(setup, "END", "S1") + attention(setup, "END", "S2")
    attends_io = (att_io > att_s) & (r.clean > 0)
    nm = _sorted(torch.nonzero((eff <= -threshold) & attends_io).tolist())
    nnm = _sorted(torch.nonzero((eff >= threshold) & attends_io).tolist())
    cols = {"attn END->IO": att_io, "attn END->S1+S2": att_s}
    rule_att = (f"attention END->IO > attention END->S1 + END->S2; applied only when the clean logit "
                f"diff is > 0 (here {r.clean:.3g})")
    common = dict(effect=eff, receivers=r.receivers, clean=r.clean, corrupted=r.corrupted, kept_at="END")
    return (
        HeadClass("Name Mover", nm, f"path-patching effect on the logits <= -{100 * threshold:g}% of the clean "
                  f"logit diff, and {rule_att}", _table(eff, cols, nm), **common),
        HeadClass("Negative Name Mover", nnm, f"path-patching effect on the logits >= +{100 * threshold:g}% of the "
                  f"clean logit diff, and {rule_att}", _table(eff, cols, nnm), **common),
    )


def s_inhibition(setup: Setup, movers: Sequence[Head], threshold: float = S_INHIBITION_EFFECT) -> HeadClass:
    """S-Inhibition heads (Sec. 3.2).

    Experiment: path patching from each head to the queries of the Name Movers at END (all
    Name Movers together as receivers). Rule (Fig. 4b: the four S-Inhibition heads are the
    heads whose patching lowers the logit diff through the Name Movers' queries; the text: they
    attend from END to S2, 0.51 on average): effect <= -threshold x clean logit diff, and
    attention END->S2 > attention END->IO. Heads that are themselves receivers are excluded.
    Applied only when the clean logit diff is > 0 (as for :func:`name_movers`).
    """
    movers = _sorted(movers)
    if not movers:
        return _empty("S-Inhibition", setup, "no Name Movers were found, so there are no queries to patch", "END")
    r = _path(setup, movers, "q", "END")
    eff = r.relative
    att_s2 = attention(setup, "END", "S2")
    att_io = attention(setup, "END", "IO")
    mask = (eff <= -threshold) & (att_s2 > att_io) & (r.clean > 0)
    heads = [h for h in _sorted(torch.nonzero(mask).tolist()) if h not in movers]
    return HeadClass(
        "S-Inhibition", heads,
        f"path-patching effect through the Name Movers' queries at END <= -{100 * threshold:g}% of the clean "
        f"logit diff, and attention END->S2 > attention END->IO; applied only when the clean logit "
        f"diff is > 0 (here {r.clean:.3g})",
        _table(eff, {"attn END->S2": att_s2, "attn END->IO": att_io}, heads),
        eff, r.receivers, r.clean, r.corrupted, "END")


def induction_and_duplicate(setup: Setup, s_inhibition_heads: Sequence[Head],
                            threshold: float = INDUCTION_EFFECT) -> tuple[HeadClass, HeadClass]:
    """Induction and Duplicate Token heads (Sec. 3.3).

    Experiment: path patching from each head to the keys and values of the S-Inhibition heads
    at S2. Rule (Fig. 5: the heads whose patching lowers the logit diff through the
    S-Inhibition heads' keys and values; the text tells them apart by where they attend from
    S2: Induction heads to S1+1, Duplicate Token heads to S1): effect <= -threshold x clean
    logit diff; then Induction if attention S2->S1+1 > S2->S1, else Duplicate Token.
    The classes are confirmed on repeated random tokens in the chapter (induction and
    duplicate-token scores).
    """
    receivers = _sorted(s_inhibition_heads)
    if not receivers:
        empty = _empty("Induction", setup, "no S-Inhibition heads were found", "S2")
        return empty, _empty("Duplicate Token", setup, "no S-Inhibition heads were found", "S2")
    r = _path(setup, receivers, "kv", "S2")
    eff = r.relative
    to_s1p1 = attention(setup, "S2", "S1+1")
    to_s1 = attention(setup, "S2", "S1")
    hits = [h for h in _sorted(torch.nonzero(eff <= -threshold).tolist()) if h not in receivers]
    ind = [h for h in hits if to_s1p1[h] > to_s1[h]]
    dup = [h for h in hits if h not in ind]
    cols = {"attn S2->S1+1": to_s1p1, "attn S2->S1": to_s1}
    base = (f"path-patching effect through the S-Inhibition heads' keys and values at S2 <= "
            f"-{threshold:.0%} of the clean logit diff")
    tab_ind, tab_dup = _table(eff, cols, ind), _table(eff, cols, dup)
    common = dict(effect=eff, receivers=r.receivers, clean=r.clean, corrupted=r.corrupted, kept_at="S2")
    return (HeadClass("Induction", ind, base + ", and attention S2->S1+1 > S2->S1", tab_ind, **common),
            HeadClass("Duplicate Token", dup, base + ", and attention S2->S1 >= S2->S1+1", tab_dup, **common))


def previous_token(setup: Setup, induction_heads: Sequence[Head],
                   threshold: float = PREVIOUS_TOKEN_EFFECT) -> HeadClass:
    """Previous Token heads (Sec. 3.3).

    Experiment: path patching from each head to the keys of the Induction heads at S1+1. Rule
    (the text: the heads that matter through the Induction heads' keys and attend from S1+1 to
    S1): effect <= -threshold x clean logit diff, and attention S1+1->S1 > attention S1+1->IO.
    The class is confirmed on repeated random tokens in the chapter (previous-token score).
    """
    receivers = _sorted(induction_heads)
    if not receivers:
        return _empty("Previous Token", setup, "no Induction heads were found", "S1+1")
    r = _path(setup, receivers, "k", "S1+1")
    eff = r.relative
    to_s1 = attention(setup, "S1+1", "S1")
    to_io = attention(setup, "S1+1", "IO")
    heads = [h for h in _sorted(torch.nonzero((eff <= -threshold) & (to_s1 > to_io)).tolist())
             if h not in receivers]
    return HeadClass(
        "Previous Token", heads,
        f"path-patching effect through the Induction heads' keys at S1+1 <= -{threshold:.0%} of the "
        f"clean logit diff, and attention S1+1->S1 > attention S1+1->IO",
        _table(eff, {"attn S1+1->S1": to_s1, "attn S1+1->IO": to_io}, heads),
        eff, r.receivers, r.clean, r.corrupted, "S1+1")


def _empty(name: str, setup: Setup, why: str, kept_at: str) -> HeadClass:
    n_l, n_h = setup.model.cfg.n_layers, setup.model.cfg.n_heads
    return HeadClass(name, [], f"not run: {why}", pd.DataFrame(), torch.zeros(n_l, n_h), "none",
                     float("nan"), float("nan"), kept_at)


def circuit_classes(setup: Setup) -> dict[str, HeadClass]:
    """Every class up to the Previous Token heads, each found from the previous ones."""
    nm, nnm = name_movers(setup)
    sin = s_inhibition(setup, nm.heads)
    ind, dup = induction_and_duplicate(setup, sin.heads)
    prev = previous_token(setup, ind.heads)
    return {c.name: c for c in (nm, nnm, sin, ind, dup, prev)}


# ----------------------------------------------------------------------------- backups and the circuit


def backup_name_movers(setup: Setup, movers: Sequence[Head], others: Sequence[Head] = (),
                       threshold: float = BACKUP_EFFECT) -> HeadClass:
    """Backup Name Movers (Sec. 3.4).

    Experiment: path patching from each head to the logits at END, as for the Name Movers
    (:func:`direct_effects`), but with the Name Movers knocked out (mean-ablated over p_ABC,
    per template group and position) in every run of Algorithm 1. Rule (Sec. 3.4: the heads
    outside the other classes whose effect exceeds 2% once the Name Movers are knocked out;
    they take over the Name Movers' job, so the effect counted is a drop, the Name Movers'
    sign): effect after the knockout <= -threshold x the knocked-out model's logit diff, and
    the head is in no other class (the Name Movers and ``others``).

    ``effect`` is the effect after the knockout; ``extra["before"]`` the same experiment
    without it, for the before/after comparison (the Negative Name Movers change there too).
    """
    movers = _sorted(movers)
    if not movers:
        return _empty("Backup Name Mover", setup,
                      "no Name Movers were found, so there is nothing to knock out", "END")
    before = direct_effects(setup).relative
    r = _path(setup, "logits", "q", "END", base_ablation=movers)
    eff = r.relative
    excluded = set(movers) | {tuple(h) for h in others}
    heads = [h for h in _sorted(torch.nonzero(eff <= -threshold).tolist()) if h not in excluded]
    att_io = attention(setup, "END", "IO")
    att_s = attention(setup, "END", "S1") + attention(setup, "END", "S2")
    cols = {"effect before knockout": before, "attn END->IO": att_io, "attn END->S1+S2": att_s}
    rule = (f"path-patching effect on the logits with the Name Movers ({', '.join(f'{l}.{h}' for l, h in movers)}) "
            f"mean-ablated <= -{threshold:.0%} of the knocked-out model's logit diff, and the head is "
            f"in no other class")
    return HeadClass("Backup Name Mover", heads, rule, _table(eff, cols, heads), eff,
                     r.receivers + " (Name Movers knocked out)", r.clean, r.corrupted, "END",
                     extra={"before": before, "knocked out": movers, "excluded": _sorted(excluded)})


def all_classes(setup: Setup) -> dict[str, HeadClass]:
    """The paper's seven classes: :func:`circuit_classes`, then the Backup Name Movers found
    with those Name Movers knocked out, excluding the heads of every other class."""
    classes = circuit_classes(setup)
    others = [h for c in classes.values() for h in c.heads]
    backup = backup_name_movers(setup, classes["Name Mover"].heads, others)
    return {**classes, backup.name: backup}


def circuit(classes: dict[str, HeadClass] | Sequence[HeadClass]) -> dict[Head, list[str]]:
    """The circuit of some classes, as :mod:`ioi_helpers.ablation` takes it: each head mapped
    to the position its class is kept at (``HeadClass.kept_at``: END for the three kinds of
    Name Movers and the S-Inhibition heads, S2 for Induction and Duplicate Token heads, S1+1
    for Previous Token heads). A head in two classes is kept at both positions."""
    items = classes.values() if isinstance(classes, dict) else classes
    out: dict[Head, list[str]] = {}
    for c in items:
        for head in _sorted(c.heads):
            kept = out.setdefault(head, [])
            if c.kept_at not in kept:
                kept.append(c.kept_at)
    return dict(sorted(out.items()))
