"""Discovering the circuit's head classes: one function per step of the paper's search.

Each step runs one path-patching experiment (``ioi_helpers.patching.path_patch``) and applies
an explicit rule to its result. The rules are written from the paper's text and figures (each
docstring says which), so that on GPT-2 small they pick the paper's heads; on any other model
they pick whatever that model has, possibly nothing. A step returns a :class:`HeadClass`: the
heads, the printed rule, and a table of every candidate with the numbers the rule looked at.

Steps depend on earlier ones (S-Inhibition heads are found through the Name Movers' queries,
and so on). A chapter that needs an earlier class recomputes it through these functions;
results are cached on disk (:mod:`ioi_helpers.cache`: keyed by model, weights, parameters, the
source of every module that computes them, the prompt data, library versions, device and dtype;
``$IOI_CACHE_DIR``, default ``~/.cache/ioi-circuit-book``), so recomputing is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from . import cache as cache_mod
from . import dataset as dataset_mod
from . import patching, scores
from .hooks import Head
from .models import get_tokenizer

CACHE_ENV_VAR = cache_mod.CACHE_ENV_VAR
weights_fingerprint = cache_mod.weights_fingerprint
cache_dir = cache_mod.cache_dir

# Thresholds, as fractions of the clean logit difference. See each step's docstring.
NAME_MOVER_EFFECT = 0.05
S_INHIBITION_EFFECT = 0.05
INDUCTION_EFFECT = 0.03
PREVIOUS_TOKEN_EFFECT = 0.03
BACKUP_EFFECT = 0.02

# Which inputs of the S-Inhibition heads at S2 the Induction / Duplicate Token step patches.
# "v" (default): the values, as the authors' code does (Easy-Transformer `experiments.py`,
# repository root, section "S-Inhibition patching": `plot_path_patching(model, ioi_dataset,
# receiver_hooks=[(f"blocks.{layer}.attn.hook_v", head) for the "s2 inhibition" heads],
# position="S2")`). "kv": keys and values, the paper's text ("keys and values"; Sec. 3.3),
# offered as a variant.
S2_RECEIVER_INPUTS = {"v": "values", "kv": "keys and values"}

# Where the Name Movers are knocked out to look for their backups (Sec. 3.4). "END" (default):
# the authors' experiments.py, section "Backup NM results", mean-ablates them with
# `do_circuit_extraction(heads_to_remove=get_heads_circuit(circuit={"name mover": [9.9, 9.6,
# 10.0]}))`, i.e. at their RELEVANT_TOKENS position "end" only, and passes those hooks as
# `extra_hooks` to every path-patching run. None: every position (the book's earlier choice).
KNOCKOUT_POSITION = "END"
S2_RECEIVER_INPUT = "v"


# ----------------------------------------------------------------------------- set-up


@dataclass
class Setup:
    """A model and the matched p_IOI / p_ABC datasets every step uses."""

    model: object
    n_prompts: int = 100
    seed: int = 0
    prepend_bos: bool = False
    template_set: str = "mixed"
    # The rules' thresholds (fractions of the clean logit diff; see each step). Every chapter
    # takes them from here, so a class is the same class in every chapter.
    name_mover_threshold: float = NAME_MOVER_EFFECT
    s_inhibition_threshold: float = S_INHIBITION_EFFECT
    induction_threshold: float = INDUCTION_EFFECT
    previous_threshold: float = PREVIOUS_TOKEN_EFFECT
    backup_threshold: float = BACKUP_EFFECT

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
        return {"model": self.model_name, "weights": weights_fingerprint(self.model),
                "n_prompts": self.n_prompts, "seed": self.seed,
                "prepend_bos": self.prepend_bos, "template_set": self.template_set}

    def settings(self) -> dict:
        """What every table states: model, N, BOS, templates, seed."""
        return {"model": self.model_name, "N": self.n_prompts, "prepend_bos": self.prepend_bos,
                "template_set": self.template_set, "seed": self.seed}

    @property
    def clean_logit_diffs(self) -> Float[Tensor, "batch"]:
        """The model's logit diff on each p_IOI prompt (cached)."""
        from . import metrics

        return cached("clean_logit_diff", self, {},
                      lambda: metrics.logit_diff(metrics.end_logits(self.model, self.ioi), self.ioi))

    @property
    def does_task(self) -> bool:
        """:func:`ioi_helpers.metrics.does_task` on p_IOI: every rule applies only when True."""
        from . import metrics

        return metrics.does_task(self.clean_logit_diffs)

    def thresholds(self) -> dict:
        return {k: getattr(self, k) for k in SETUP_PARAMETERS if k.endswith("_threshold")}


# The settings every chapter shares: each chapter that runs discovery declares these names in
# its parameters cell (with these defaults) and builds its Setup with :func:`setup_from`, so
# ``-p template_set all`` (or a threshold) reaches every chapter.
SETUP_PARAMETERS = ("n_prompts", "seed", "prepend_bos", "template_set", "name_mover_threshold",
                    "s_inhibition_threshold", "induction_threshold", "previous_threshold",
                    "backup_threshold")


def setup_defaults() -> dict:
    """The default of each shared setting (what every chapter's parameters cell declares)."""
    from dataclasses import fields

    return {f.name: f.default for f in fields(Setup) if f.name in SETUP_PARAMETERS}


def setup_from(model, params: dict) -> Setup:
    """The one way a chapter builds its Setup: ``discovery.setup_from(model, globals())``.
    Every shared setting must be present in ``params`` (a chapter that forgot one fails here)."""
    missing = [k for k in SETUP_PARAMETERS if k not in params]
    if missing:
        raise KeyError(f"the chapter's parameters lack the shared settings {missing}")
    return Setup(model, **{k: params[k] for k in SETUP_PARAMETERS})


# ----------------------------------------------------------------------------- caching


def cached(step: str, setup: Setup, params: dict, compute: Callable[[], object]):
    """``compute()``, or its stored result for the same model, data, params, code and
    environment (:mod:`ioi_helpers.cache`)."""
    if setup.model_name.startswith("unknown"):
        return compute()
    return cache_mod.cached(step, setup.key(), params, setup.model, compute)


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
          base_ablation: Sequence[Head] = (), ablate_at: str | None = KNOCKOUT_POSITION,
          ) -> patching.PathPatchingResult:
    params = {"receivers": receivers if receivers == "logits" else _sorted(receivers),
              "input": receiver_input, "position": position, "ablate": _sorted(base_ablation),
              "ablate_at": ablate_at if base_ablation else None}

    def compute():  # the runs of steps A and B only when the result is not on disk
        caches = setup.caches if not base_ablation else None
        return patching.path_patch(setup.model, setup.ioi, setup.abc, receivers=receivers,
                                   receiver_input=receiver_input, position=position,
                                   caches=caches, **_ablation_kwargs(base_ablation, ablate_at))

    return cached("path_patch", setup, params, compute)


def _ablation_kwargs(heads: Sequence[Head], at: str | None = KNOCKOUT_POSITION) -> dict:
    """``path_patch``'s knockout: ``heads`` mean-ablated at ``at`` (None: every position)."""
    if not heads:
        return {}
    return {"knockout": {tuple(h): None if at is None else [at] for h in heads}}


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


def name_movers(setup: Setup, threshold: float | None = None) -> tuple[HeadClass, HeadClass]:
    """Name Movers and Negative Name Movers (Sec. 3.1).

    Experiment: path patching from each head to the logits at END (Fig. 3b). Rule (from Fig. 3b,
    where the three Name Movers are the heads with the largest drops, of more than ~5% of the
    logit difference, and the two Negative Name Movers the heads with the largest rises; and from
    the text: both kinds attend from END to the IO more than to S):

    * Name Mover: effect <= -threshold x clean logit diff, and attention END->IO >
      attention END->S1 + END->S2.
    * Negative Name Mover: effect >= +threshold x clean logit diff, and the same attention
      condition.

    Both are applied only when the model does the task (:func:`ioi_helpers.metrics.does_task`):
    the effects are fractions of the clean logit diff, which mean nothing for a model that does
    not prefer the IO (e.g. random weights).
    """
    threshold = setup.name_mover_threshold if threshold is None else threshold
    r = direct_effects(setup)
    eff = r.relative
    att_io = attention(setup, "END", "IO")
    att_s = attention(setup, "END", "S1") + attention(setup, "END", "S2")
    attends_io = (att_io > att_s) & setup.does_task
    nm = _sorted(torch.nonzero((eff <= -threshold) & attends_io).tolist())
    nnm = _sorted(torch.nonzero((eff >= threshold) & attends_io).tolist())
    cols = {"attn END->IO": att_io, "attn END->S1+S2": att_s}
    rule_att = (f"attention END->IO > attention END->S1 + END->S2; {_task_clause(setup, r.clean)}")
    common = dict(effect=eff, receivers=r.receivers, clean=r.clean, corrupted=r.corrupted, kept_at="END")
    return (
        HeadClass("Name Mover", nm, f"path-patching effect on the logits <= -{100 * threshold:g}% of the clean "
                  f"logit diff, and {rule_att}", _table(eff, cols, nm), **common),
        HeadClass("Negative Name Mover", nnm, f"path-patching effect on the logits >= +{100 * threshold:g}% of the "
                  f"clean logit diff, and {rule_att}", _table(eff, cols, nnm), **common),
    )


def _task_clause(setup: Setup, clean: float) -> str:
    from . import metrics

    return (f"applied only when the model does the task ({metrics.task_criterion()}; here: "
            f"{'yes' if setup.does_task else 'no'}, clean logit diff {clean:.3g})")


def s_inhibition(setup: Setup, movers: Sequence[Head], threshold: float | None = None) -> HeadClass:
    """S-Inhibition heads (Sec. 3.2).

    Experiment: path patching from each head to the queries of the Name Movers at END (all
    Name Movers together as receivers). Rule (Fig. 4b: the four S-Inhibition heads are the
    heads whose patching lowers the logit diff through the Name Movers' queries; the text: they
    attend from END to S2, 0.51 on average): effect <= -threshold x clean logit diff, and
    attention END->S2 > attention END->IO. Heads that are themselves receivers are excluded.
    Applied only when the model does the task (as for :func:`name_movers`).
    """
    threshold = setup.s_inhibition_threshold if threshold is None else threshold
    movers = _sorted(movers)
    if not movers:
        return _empty("S-Inhibition", setup, "no Name Movers were found, so there are no queries to patch", "END")
    r = _path(setup, movers, "q", "END")
    eff = r.relative
    att_s2 = attention(setup, "END", "S2")
    att_io = attention(setup, "END", "IO")
    mask = (eff <= -threshold) & (att_s2 > att_io) & setup.does_task
    heads = [h for h in _sorted(torch.nonzero(mask).tolist()) if h not in movers]
    return HeadClass(
        "S-Inhibition", heads,
        f"path-patching effect through the Name Movers' queries at END <= -{100 * threshold:g}% of the clean "
        f"logit diff, and attention END->S2 > attention END->IO; {_task_clause(setup, r.clean)}",
        _table(eff, {"attn END->S2": att_s2, "attn END->IO": att_io}, heads),
        eff, r.receivers, r.clean, r.corrupted, "END")


def induction_and_duplicate(setup: Setup, s_inhibition_heads: Sequence[Head],
                            threshold: float | None = None,
                            receiver_input: str = S2_RECEIVER_INPUT) -> tuple[HeadClass, HeadClass]:
    """Induction and Duplicate Token heads (Sec. 3.3).

    Experiment: path patching from each head to the S-Inhibition heads at S2 (all of them
    together as receivers; x_new = p_ABC). ``receiver_input`` says which of their inputs is
    patched: ``"v"`` (default), their values, as the authors' code does (``experiments.py`` at
    the repository root, section "S-Inhibition patching": ``plot_path_patching`` with
    ``receiver_hooks`` = the ``blocks.{layer}.attn.hook_v`` of the "s2 inhibition" heads,
    ``position="S2"``); ``"kv"``, keys and values, the variant the paper's Sec. 3.3 text
    describes. Rule (Sec. 3.3 and its figure: the heads whose patching lowers the logit diff
    through the S-Inhibition heads at S2 form two groups, told apart by where they attend from
    S2: Induction heads to S1+1, Duplicate Token heads to S1): effect <= -threshold x clean
    logit diff; then Induction if attention S2->S1+1 > S2->S1, else Duplicate Token. The paper
    gives no numeric cut-off; ``threshold`` (3%) sits below the 5% of the two earlier steps
    because an effect that must pass through two more classes of heads before the logits is
    smaller. Receivers are not candidates. The classes are confirmed on repeated random tokens
    in the chapter (:func:`repeated_token_check`).
    """
    if receiver_input not in S2_RECEIVER_INPUTS:
        raise ValueError(f"receiver_input must be one of {sorted(S2_RECEIVER_INPUTS)}, got {receiver_input!r}")
    threshold = setup.induction_threshold if threshold is None else threshold
    receivers = _sorted(s_inhibition_heads)
    if not receivers:
        empty = _empty("Induction", setup, "no S-Inhibition heads were found", "S2")
        return empty, _empty("Duplicate Token", setup, "no S-Inhibition heads were found", "S2")
    r = _path(setup, receivers, receiver_input, "S2")
    eff = r.relative
    to_s1p1 = attention(setup, "S2", "S1+1")
    to_s1 = attention(setup, "S2", "S1")
    hits = [h for h in _sorted(torch.nonzero(eff <= -threshold).tolist()) if h not in receivers]
    ind = [h for h in hits if to_s1p1[h] > to_s1[h]]
    dup = [h for h in hits if h not in ind]
    cols = {"attn S2->S1+1": to_s1p1, "attn S2->S1": to_s1}
    what = S2_RECEIVER_INPUTS[receiver_input]
    src = ("as the authors' code (experiments.py, plot_path_patching to hook_v)" if receiver_input == "v"
           else "the paper's text (Sec. 3.3); the authors' code patches the values only")
    base = (f"path-patching effect through the S-Inhibition heads' {what} at S2 ({src}) <= "
            f"-{threshold:.0%} of the clean logit diff")
    tab_ind, tab_dup = _table(eff, cols, ind), _table(eff, cols, dup)
    common = dict(effect=eff, receivers=r.receivers, clean=r.clean, corrupted=r.corrupted, kept_at="S2",
                  extra={"receiver heads": receivers, "passed the effect cut": hits,
                         "receiver input": receiver_input})
    return (HeadClass("Induction", ind, base + ", and attention S2->S1+1 > S2->S1", tab_ind, **common),
            HeadClass("Duplicate Token", dup, base + ", and attention S2->S1 >= S2->S1+1", tab_dup, **common))


def previous_token_attention(setup: Setup) -> dict[str, Float[Tensor, "layer head"]]:
    """Mean attention from S1+1 to S1 and the mean, over prompts, of the largest attention
    from S1+1 to any other position before S1+1 (cached). See :func:`previous_token`."""
    return cached("previous_attention", setup, {},
                  lambda: scores.previous_token_attention(setup.model, setup.ioi, "S1+1"))


# Which inputs of the Induction heads at S1+1 the Previous Token step patches: "k" (default,
# Sec. 3.3: the Previous Token heads are found through the Induction heads' keys); "qkv" is the
# variant with every input, which also counts heads the Induction heads read only as values.
S1P1_RECEIVER_INPUTS = {"k": "keys", "qkv": "queries, keys and values"}


def previous_token(setup: Setup, induction_heads: Sequence[Head],
                   threshold: float | None = None, receiver_input: str = "k") -> HeadClass:
    """Previous Token heads (Sec. 3.3).

    Experiment: path patching from each head to the keys of the Induction heads at S1+1 (all
    of them together as receivers; x_new = p_ABC). Rule: effect <= -threshold x clean logit
    diff, and the head attends from S1+1 to the previous token, S1, more than to any other
    earlier token: mean attention S1+1->S1 > the mean, over prompts, of the largest attention
    from S1+1 to a position before S1+1 other than S1 (the first token included).

    Why this attention condition: Sec. 3.3 describes these heads as attending from S1+1 to the
    previous token and copying the subject's name there, and the authors' check of the class
    (``experiments.py``, "Validation outside of IOI") scores a head by its attention to the
    previous token on repeated random tokens (the ``offset=-1`` diagonal). The earlier rule
    compared S1+1->S1 with S1+1->IO; on BABA prompts ("Then, [B] and [A] ...") the IO comes
    after S1+1, so that attention is 0 by the causal mask and the comparison held for every
    head. The new one means the same thing on both orders.

    No numeric cut-off in the paper; 3% as for the Induction step
    (:func:`induction_and_duplicate`). Receivers are not candidates. The class is confirmed on
    repeated random tokens in the chapter (previous-token score).
    """
    if receiver_input not in S1P1_RECEIVER_INPUTS:
        raise ValueError(f"receiver_input must be one of {sorted(S1P1_RECEIVER_INPUTS)}, got {receiver_input!r}")
    threshold = setup.previous_threshold if threshold is None else threshold
    receivers = _sorted(induction_heads)
    if not receivers:
        return _empty("Previous Token", setup, "no Induction heads were found", "S1+1")
    r = _path(setup, receivers, receiver_input, "S1+1")
    eff = r.relative
    att = previous_token_attention(setup)
    to_s1, to_other = att["previous"], att["max other"]
    heads = [h for h in _sorted(torch.nonzero((eff <= -threshold) & (to_s1 > to_other)).tolist())
             if h not in receivers]
    return HeadClass(
        "Previous Token", heads,
        f"path-patching effect through the Induction heads' {S1P1_RECEIVER_INPUTS[receiver_input]} at S1+1 <= -{threshold:.0%} of the "
        f"clean logit diff, and attention S1+1->S1 > the largest attention from S1+1 to any other "
        f"earlier position (mean over prompts)",
        _table(eff, {"attn S1+1->S1": to_s1, "max attn S1+1->other earlier": to_other}, heads),
        eff, r.receivers, r.clean, r.corrupted, "S1+1", extra={"receiver heads": receivers})


# ----------------------------------------------------------------------------- checks of steps 3-4


CONFIRM_SCORE = 0.1  # repeated random tokens: ~3x the attention a uniform head puts on one key
EXPLORATORY_K = 4


def repeated_token_check(heads: Sequence[Head], rep: dict[str, Tensor], score: str,
                         min_score: float = CONFIRM_SCORE) -> pd.DataFrame:
    """Confirm a class on repeated random tokens (Sec. 3.3).

    ``rep`` is :func:`ioi_helpers.scores.repeated_token_scores` (keys ``induction``,
    ``duplicate``, ``previous``); ``score`` the one the class should show. A head is
    *confirmed* when that score is the largest of its three and at least ``min_score``
    (the query attends to one of ~30 earlier tokens, so a head that spreads its attention
    evenly scores ~0.035; 0.1 is about three times that). One row per head.
    """
    if score not in rep:
        raise ValueError(f"score must be one of {sorted(rep)}, got {score!r}")
    rows = []
    for l, h in _sorted(heads):
        vals = {k: float(v[l, h]) for k, v in rep.items()}
        top = max(vals, key=vals.get)
        rows.append({"head": f"{l}.{h}", **{f"{k} score": v for k, v in vals.items()},
                     "confirmed": top == score and vals[score] >= min_score})
    return pd.DataFrame(rows, columns=["head", *(f"{k} score" for k in rep), "confirmed"])


def top_heads(effect: Float[Tensor, "layer head"], k: int, exclude: Sequence[Head] = ()) -> list[Head]:
    """The ``k`` heads with the most negative ``effect`` (fewer if fewer are negative),
    skipping ``exclude``. Used only for *exploratory* receivers, never as a class."""
    n_heads = effect.shape[1]
    skip = {tuple(h) for h in exclude}
    out: list[Head] = []
    for i in torch.argsort(effect.flatten(), stable=True).tolist():
        head = (i // n_heads, i % n_heads)
        if len(out) == k or float(effect[head]) >= 0:
            break
        if head not in skip:
            out.append(head)
    return _sorted(out)


def closest_heads(classes: dict[str, HeadClass], names: Sequence[str], n: int = 6) -> pd.DataFrame:
    """The evidence when a step finds nothing: for each class in ``names``, the ``n`` heads with
    the most negative effect in its step (the closest to passing its rule, with the numbers
    the rule looked at), or one row saying that the step did not run."""
    parts = []
    for name in names:
        cls = classes[name]
        if len(cls.table):
            top = cls.table.sort_values("effect", kind="stable").head(n)
            parts.append(top.drop(columns=["layer", "index"]).assign(step=name))
        else:
            parts.append(pd.DataFrame([{"step": name, "head": "-", "note": cls.rule}]))
    out = pd.concat(parts, ignore_index=True)
    return out[["step", "head", *[c for c in out.columns if c not in ("step", "head")]]]


@dataclass
class Receivers:
    """The heads a step patches into: a discovered class, or an exploratory stand-in."""

    heads: list[Head]
    exploratory: bool
    how: str


def receivers_for(setup: Setup, name: str, k: int = EXPLORATORY_K,
                  classes: dict[str, HeadClass] | None = None) -> Receivers:
    """Receivers for the step after class ``name`` ("Name Mover", "S-Inhibition" or
    "Induction"): the discovered class when it is not empty. Otherwise an *exploratory*
    stand-in: the ``k`` heads with the most negative effect in the step that looks for that
    class, run with its own receivers chosen the same way. The stand-in only lets a chapter
    show the next experiment on a model that lacks the class; it is never recorded as a class.
    """
    classes = classes or circuit_classes(setup)
    found = classes[name].heads
    if found:
        return Receivers(found, False, f"the discovered {name} heads")
    if name == "Name Mover":
        return Receivers(top_heads(direct_effects(setup).relative, k), True,
                         f"the {k} heads with the largest drops in path patching to the logits")
    prev_name = {"S-Inhibition": "Name Mover", "Induction": "S-Inhibition"}.get(name)
    if prev_name is None:
        raise ValueError(f"no step uses the {name!r} heads as receivers")
    prev = receivers_for(setup, prev_name, k, classes)
    if not prev.exploratory:  # the step ran on discovered receivers and found nothing
        effect = classes[name].effect
    elif name == "S-Inhibition":
        effect = s_inhibition(setup, prev.heads).effect
    else:
        effect = induction_and_duplicate(setup, prev.heads)[0].effect
    step = {"S-Inhibition": "the Name Movers' queries at END",
            "Induction": f"the S-Inhibition heads' {S2_RECEIVER_INPUTS[S2_RECEIVER_INPUT]} at S2"}[name]
    src = " (themselves exploratory)" if prev.exploratory else ""
    heads = top_heads(effect, k, exclude=prev.heads)
    how = f"the {k} heads with the largest drops in path patching to {step}{src}, whatever their attention"
    if not heads:
        names = ", ".join(f"{l}.{h}" for l, h in prev.heads)
        why = ("that step had no receivers either" if not prev.heads else
               f"every effect there is exactly 0, since no head before its receivers ({names}) can "
               f"reach them" if not bool(effect.any()) else "no head lowers the logit diff there")
        how += f"; there are none: {why}"
    return Receivers(heads, True, how)


# The App. A prompt variants are dataset construction: :mod:`ioi_helpers.dataset` (re-exported
# here for code written against the old location).
SIGNAL_VARIANTS = dataset_mod.SIGNAL_VARIANTS
signal_variant = dataset_mod.signal_variant


def s_inhibition_share(setup: Setup, senders: Sequence[Head], receivers: Sequence[Head],
                       variants: Sequence[tuple[str, str]] = tuple(v for v in dataset_mod.SIGNAL_VARIANTS
                                                                    if v != ("orig", "orig")),
                       construction: str = "code", receiver_input: str = S2_RECEIVER_INPUT,
                       ) -> pd.DataFrame:
    """How much of the S-Inhibition heads' change the ``senders`` (Induction + Duplicate Token
    heads) explain, for each App. A variant and for p_ABC (one row each).

    * ``total``: logit diff change when the receivers' outputs at END are taken from the variant
      (App. A's experiment, Fig. 9, as :func:`ioi_helpers.signals.token_position` runs it):
      everything the variant changes in them.
    * ``via senders``: path patching from the senders as one group (x_new = the variant) to the
      receivers' ``receiver_input`` at S2 (default: values, as in :func:`induction_and_duplicate`).
    * ``via all heads``: the same with every head upstream of the receivers as one group.
    * ``share`` = via senders / total; ``share of heads`` = via senders / via all heads.
    Changes are in logits, on p_IOI; the clean value is the model's logit diff.
    """
    from . import metrics, signals

    senders, receivers = _sorted(senders), _sorted(receivers)
    if not senders or not receivers:
        raise ValueError("s_inhibition_share needs senders and receivers")
    last = max(l for l, _ in receivers)
    upstream = [(l, h) for l in range(last) for h in range(setup.model.cfg.n_heads)
                if (l, h) not in receivers]

    def compute():
        model, ioi = setup.model, setup.ioi
        cases = [(f"token {t} / position {p}", t, p) for t, p in variants] + [("p_ABC", "ABC", "ABC")]
        rows = []
        for label, t, p in cases:
            new = setup.abc if t == "ABC" else dataset_mod.signal_variant(ioi, t, p, construction=construction)
            caches = setup.caches if t == "ABC" else None
            pp = patching.path_patch(model, ioi, new, receivers, receiver_input, "S2",
                                     senders=[senders, upstream], caches=caches)
            logits, _ = signals.patch_outputs(model, ioi, new, receivers, "END")
            total = metrics.logit_diff(logits, ioi).mean().item()
            changed = ("both" if t == "ABC" else "token and position" if t != "orig" and p != "orig"
                       else "position" if p != "orig" else "token")
            d_all, d_send, d_heads = total - pp.clean, float(pp.delta[0]), float(pp.delta[1])
            rows.append({"variant": label, "changes": changed, "clean": pp.clean,
                         "S-Inh outputs patched": total, "total": d_all, "via senders": d_send,
                         "via all heads": d_heads, "share": d_send / d_all if d_all else float("nan"),
                         "share of heads": d_send / d_heads if d_heads else float("nan")})
        return pd.DataFrame(rows)

    params = {"senders": senders, "receivers": receivers, "variants": list(variants),
              "construction": construction, "input": receiver_input}
    return cached("s_inhibition_share", setup, params, compute)


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
                       threshold: float | None = None,
                       knockout_at: str | None = KNOCKOUT_POSITION) -> HeadClass:
    """Backup Name Movers (Sec. 3.4).

    Experiment: path patching from each head to the logits at END, as for the Name Movers
    (:func:`direct_effects`), but with the Name Movers knocked out (mean-ablated over p_ABC,
    per template group and position) in every run of Algorithm 1: at END only by default
    (``knockout_at``; the authors' ``experiments.py``, "Backup NM results", knocks them out at
    their kept position "end"), or at every position with ``knockout_at=None``. Rule (Sec. 3.4: the heads
    outside the other classes whose effect exceeds 2% once the Name Movers are knocked out;
    they take over the Name Movers' job, so the effect counted is a drop, the Name Movers'
    sign): effect after the knockout <= -threshold x the model's logit diff; attention
    END->IO > END->S1 + END->S2 measured in the run with the Name Movers knocked out
    (:func:`attention_knocked_out`): Sec. 3.4's Backup Name Movers take over the Name Movers'
    role, so they must meet the Name Movers' own attention condition (:func:`name_movers`,
    Sec. 3.1) once those are gone; and the head is in no other class (the Name Movers and
    ``others``). The table also shows the attention of the clean run. Effects before and after are both
    fractions of the (unablated) model's logit diff, so they share one scale; in GPT-2 small
    the knocked-out model keeps 95% of it, so the choice of denominator hardly matters there,
    while on a model whose knocked-out logit diff is near 0 dividing by it would blow up.

    ``effect`` is the effect after the knockout; ``extra["before"]`` the same experiment
    without it, for the before/after comparison (the Negative Name Movers change there too).
    """
    threshold = setup.backup_threshold if threshold is None else threshold
    movers = _sorted(movers)
    if not movers:
        return _empty("Backup Name Mover", setup,
                      "no Name Movers were found, so there is nothing to knock out", "END")
    direct = direct_effects(setup)
    before = direct.relative
    r = _path(setup, "logits", "q", "END", base_ablation=movers, ablate_at=knockout_at)
    eff = r.delta / abs(direct.clean)
    excluded = set(movers) | {tuple(h) for h in others}
    att = attention_knocked_out(setup, movers, knockout_at)
    att_io, att_s = att["IO"], att["S1"] + att["S2"]
    takes_over = (eff <= -threshold) & (att_io > att_s)
    heads = [h for h in _sorted(torch.nonzero(takes_over).tolist()) if h not in excluded]
    cols = {"effect before knockout": before, "attn END->IO": att_io, "attn END->S1+S2": att_s,
            "attn END->IO, clean run": attention(setup, "END", "IO")}
    where = "at END" if knockout_at == "END" else "at every position" if knockout_at is None else f"at {knockout_at}"
    rule = (f"path-patching effect on the logits with the Name Movers ({', '.join(f'{l}.{h}' for l, h in movers)}) "
            f"mean-ablated {where} <= -{threshold:.0%} of the model's logit diff; with them knocked out, "
            f"attention END->IO > attention END->S1 + END->S2 (the Name Movers' own attention "
            f"condition: a head that takes over their role attends to the IO); and the head is in no "
            f"other class")
    return HeadClass("Backup Name Mover", heads, rule, _table(eff, cols, heads), eff,
                     r.receivers + " (Name Movers knocked out)", r.clean, r.corrupted, "END",
                     extra={"before": before, "knocked out": movers, "excluded": _sorted(excluded),
                            "knocked out at": knockout_at})


def attention_knocked_out(setup: Setup, heads: Sequence[Head], at: str | None = KNOCKOUT_POSITION,
                          ) -> dict[str, Float[Tensor, "layer head"]]:
    """Mean attention from END to IO, S1 and S2 on p_IOI, per head, in the run with ``heads``
    mean-ablated (p_ABC means per template group and position, as :mod:`ioi_helpers.ablation`)
    at ``at`` (None: every position). Cached."""
    from . import ablation
    from .hooks import cache_activations, hook_name, positions

    heads = _sorted(heads)
    targets = ("IO", "S1", "S2")

    def compute():
        model, ioi = setup.model, setup.ioi
        values = ablation.ablation_values(model, ioi, setup.abc, "mean")
        mask = ablation.knockout_mask(model, ioi, {h: None if at is None else [at] for h in heads})
        names = [hook_name("pattern", l) for l in range(model.cfg.n_layers)]
        store = cache_activations(model, ioi.tokens, names, ablation.ablation_hooks(model, mask, values))
        q = positions(ioi, "END")
        return {t: torch.stack([scores.attention_at(store[n], q, positions(ioi, t)).mean(0).float().cpu()
                                for n in names]) for t in targets}

    return cached("attention_knocked_out", setup, {"heads": heads, "at": at}, compute)


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
