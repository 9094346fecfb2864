"""Knockouts (mean, resample or zero ablation of heads) and the circuit criteria of Sec. 4:
faithfulness, completeness and minimality.

The paper's knockout is a *mean ablation*: a head's output at a position is replaced by its
mean over p_ABC, the mean taken per template group and per position (prompts of one template
have the same length, so positions line up). MLPs, LayerNorms and embeddings are never
ablated. A head's output here is its ``hook_z`` (the output before ``W_O``; the output is
linear in it, so averaging either is the same).

Typical use::

    values = ablation_values(model, ds, abc)                      # p_ABC means, per group
    f = faithfulness(model, ds, values, circuit)                  # F(M), F(C), ratio, spread
    completeness(model, ds, values, circuit, class_sets(paper.CIRCUIT))
    minimality(model, ds, values, circuit, PAPER_MINIMALITY_K)

A *circuit* maps each head to the positions where it is kept, e.g.
``{(9, 9): ["END"], (5, 5): ["S2"]}``; ``None`` keeps a head everywhere. In the circuit run
C(x) every head outside C is ablated at all positions and each head of C everywhere except
at its kept positions (taken per prompt from ``ds.pos``).

``transformer_lens.tools.analysis.attribution_patching.faithfulness`` is not used: it keeps
a set of *edges* (ablating every other edge), for one clean/corrupt pair at a time, with
means over calibration prompts per absolute position; the paper keeps *nodes* (heads at
named positions), ablates with means per template group over p_ABC, and averages the logit
difference over the whole dataset before comparing (ratio of means).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from . import metrics, paper
from .dataset import IOIDataset
from .hooks import Head, cache_activations, final_resid, gather, hook_name, positions, progress_bar, run

Circuit = Mapping[Head, Sequence[str] | None]
Method = Literal["mean", "resample", "zero"]
Values = Float[Tensor, "layer batch seq head d_head"]
Mask = Bool[Tensor, "layer batch seq head"]

# Method data (K sets, search parameters, the authors' circuit dicts) live in ioi_helpers.paper,
# each with the file and function of the authors' code it was taken from; re-exported here.
PAPER_MINIMALITY_K = paper.PAPER_MINIMALITY_K
PAPER_GREEDY = paper.GREEDY
RANDOM_SETS_PAPER = paper.RANDOM_SETS

# How F(M \ K) removes K. "kept" (default): each head of K only at its kept positions in the
# circuit, as the authors' completeness.py does (`cobble_eval` adds `model_rem_hooks`, built by
# `do_circuit_extraction(heads_to_remove=heads_to_keep)`, i.e. the circuit's (head, position)
# nodes; the class sets likewise remove `get_heads_circuit(...)`, positions included). "all":
# at every position, the book's earlier construction. F(C \ K) removes K everywhere in both.
K_POSITIONS = ("kept", "all")

# Rows (prompts x sets K) per forward in the batched runs (:func:`ablated_logit_diffs`): many
# sets share one forward. On CPU (ioi-planted, N = 100, 1 thread; benchmarks/bench_completeness.py)
# 150 to 3000 rows per forward cost the same per run: the forward is compute-bound there, and
# the gain (~1.4-1.6x) comes from dropping the padding and unembedding only IO and S. Sharing
# forwards is for accelerators, where the per-forward overhead dominates (not measured here).
MAX_ROWS = 1000


# ----------------------------------------------------------------------------- values


def head_outputs(model, ds: IOIDataset, batch_size: int = 100) -> Values:
    """Every head's output (``hook_z``) on ``ds``, ``[layer, batch, seq, head, d_head]``."""
    names = [hook_name("z", l) for l in range(model.cfg.n_layers)]
    parts = []
    for start in range(0, len(ds), batch_size):
        part = ds[start:start + batch_size]
        store = cache_activations(model, part.tokens, names)
        z = torch.stack([store[n] for n in names]).float().cpu()
        pad = ds.tokens.shape[1] - z.shape[2]
        parts.append(torch.nn.functional.pad(z, (0, 0, 0, 0, 0, pad)))
    return torch.cat(parts, dim=1)


def _by_group(ds: IOIDataset) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, g in enumerate(ds.groups):
        out.setdefault(g, []).append(i)
    return out


def ablation_values(model, ds: IOIDataset, reference: IOIDataset, method: Method = "mean",
                    seed: int = 0, batch_size: int = 100) -> Values:
    """What each head's output is replaced by, for every prompt of ``ds`` and position.

    * ``"mean"`` (the paper's knockout): the mean of the head's output over the prompts of
      ``reference`` (p_ABC) of the same template group, position by position.
    * ``"resample"``: the output on one random prompt of ``reference`` of the same group
      (another prompt than the one at the same index, when the group has two or more), drawn
      once per prompt with ``seed``.
    * ``"zero"``: zeros.

    Groups are matched by name (``ds.groups``); a template fixes the prompt length, so the
    positions of a group line up. Positions after a prompt's END are padding (never read).
    """
    if method not in ("mean", "resample", "zero"):
        raise ValueError(f"method must be 'mean', 'resample' or 'zero', got {method!r}")
    cfg = model.cfg
    shape = (cfg.n_layers, len(ds), ds.tokens.shape[1], cfg.n_heads, cfg.d_head)
    if method == "zero":
        return torch.zeros(shape)
    ref_groups = _by_group(reference)
    z_ref = head_outputs(model, reference, batch_size)
    out = torch.zeros(shape)
    rng = random.Random(seed)
    for g, idx in _by_group(ds).items():
        if g not in ref_groups:
            raise ValueError(f"template group {g} has no prompt in the reference dataset")
        ref_idx = ref_groups[g]
        length = int(ds.lengths[idx[0]])
        if int(reference.lengths[ref_idx[0]]) != length:
            raise ValueError(f"group {g}: prompt lengths differ between ds and reference")
        if method == "mean":
            out[:, idx, :length] = z_ref[:, ref_idx, :length].mean(dim=1, keepdim=True)
        else:
            for i in idx:
                choices = [j for j in ref_idx if j != i] or ref_idx
                out[:, i, :length] = z_ref[:, rng.choice(choices), :length]
    return out


# ----------------------------------------------------------------------------- masks


def knockout_mask(model, ds: IOIDataset,
                  heads: Iterable[Head] | Mapping[Head, Sequence[str] | None]) -> Mask:
    """True where a head is ablated: each head in ``heads`` at all positions, or, given a
    mapping head -> positions, at those named positions of each prompt (``None``: all)."""
    cfg = model.cfg
    mask = torch.zeros(cfg.n_layers, len(ds), ds.tokens.shape[1], cfg.n_heads, dtype=torch.bool)
    spec = heads if isinstance(heads, Mapping) else {tuple(h): None for h in heads}
    rows = torch.arange(len(ds))
    for (l, h), where in spec.items():
        if where is None:
            mask[l, :, :, h] = True
        else:
            for name in where:
                mask[l, rows, positions(ds, name), h] = True
    return mask


def circuit_mask(model, ds: IOIDataset, circuit: Circuit, removed: Iterable[Head] = ()) -> Mask:
    """True where a head is ablated in the run of the circuit minus ``removed``: heads outside
    the circuit (or removed) everywhere, circuit heads everywhere but their kept positions."""
    cfg = model.cfg
    mask = torch.ones(cfg.n_layers, len(ds), ds.tokens.shape[1], cfg.n_heads, dtype=torch.bool)
    removed = {tuple(h) for h in removed}
    rows = torch.arange(len(ds))
    for head, kept in circuit.items():
        l, h = head
        if tuple(head) in removed:
            continue
        if kept is None:
            mask[l, :, :, h] = False
        else:
            for name in kept:
                mask[l, rows, positions(ds, name), h] = False
    return mask


# ----------------------------------------------------------------------------- runs


def run_ablated(model, ds: IOIDataset, mask: Mask, values: Values,
                batch_size: int = 100) -> Float[Tensor, "batch vocab"]:
    """Logits at END with each head's output replaced by ``values`` where ``mask`` is True."""
    if mask.shape[:3] != values.shape[:3] or mask.shape[1] != len(ds):
        raise ValueError("mask and values must be [layer, batch, seq, head(, d_head)] for ds")
    outs = []
    for start in range(0, len(ds), batch_size):
        sl = slice(start, start + batch_size)
        part = ds[sl]
        seq = part.tokens.shape[1]
        hooks = ablation_hooks(model, mask[:, sl, :seq], values[:, sl, :seq])
        logits, _ = run(model, part.tokens, part.pos["END"], fwd_hooks=hooks)
        outs.append(logits.float().cpu())
    return torch.cat(outs)


def ablation_hooks(model, mask: Mask, values: Values) -> list:
    """Forward hooks on ``hook_z`` replacing head outputs by ``values`` where ``mask`` is
    True (``[layer, batch, seq, head]`` for the batch that will be run)."""
    device = model.cfg.device
    hooks = []
    for l in range(model.cfg.n_layers):
        if mask[l].any():
            m = mask[l].to(device)[..., None]
            v = values[l].to(device)
            hooks.append((hook_name("z", l), lambda z, hook, m=m, v=v: torch.where(m, v.to(z.dtype), z)))
    return hooks


def ablated_logit_diff(model, ds: IOIDataset, mask: Mask, values: Values,
                       batch_size: int = 100) -> Float[Tensor, "batch"]:
    """Per-prompt logit difference of the ablated run."""
    return metrics.logit_diff(run_ablated(model, ds, mask, values, batch_size), ds)


def ablated_logit_diffs(model, ds: IOIDataset, masks: Sequence[Mask] | Bool[Tensor, "set layer batch seq head"],
                        values: Values, batch_size: int = 100, max_rows: int = MAX_ROWS,
                        by_length: bool = True, progress: bool | None = None,
                        desc: str = "ablated forwards") -> Float[Tensor, "set batch"]:
    """Per-prompt logit difference of the ablated run for each of many masks, row ``i`` being
    :func:`ablated_logit_diff` with ``masks[i]`` (equal up to float rounding).

    Many masks share one forward: the prompts (at most ``batch_size`` at a time) are repeated
    once per mask along the batch, with the masks stacked the same way, up to ``max_rows`` rows
    per forward (at least one mask each). With ``by_length`` (default) the prompts go by length,
    which drops the padding: on ioi-planted (1 thread) 100 random sets took 0.55 s per set that way
    and 0.80 s padded in 1000-row forwards (two runs of benchmarks/bench_completeness.py, with
    other work on the machine: indicative only).
    Only logit(IO) - logit(S) is unembedded. ``values`` is shared by every mask. ``progress``:
    a bar over the forwards, labelled ``desc``."""
    n_sets = len(masks)
    for i in range(n_sets):
        if masks[i].shape != values.shape[:4] or masks[i].shape[1] != len(ds):
            raise ValueError("each mask must be [layer, batch, seq, head] for ds, like values")
    out = torch.empty(n_sets, len(ds))
    groups: dict[int, list[int]] = {}
    if by_length:
        for i, n in enumerate(ds.lengths.tolist()):
            groups.setdefault(n, []).append(i)
    else:
        groups[0] = list(range(len(ds)))
    pieces = [idx[j:j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]
    forwards = []  # (prompts, masks): the prompts of a piece with as many masks as fit in one forward
    for idx in pieces:
        per = max(1, max_rows // len(idx))
        forwards += [(idx, list(range(first, min(n_sets, first + per)))) for first in range(0, n_sets, per)]
    for idx, chunk in progress_bar(forwards, progress, desc=desc):
        part, rows = ds[idx], torch.tensor(idx)
        n, seq = len(idx), part.tokens.shape[1]
        v = values[:, rows, :seq]
        m = torch.stack([masks[i][:, rows, :seq] for i in chunk], dim=1)  # [layer, set, batch, seq, head]
        ld = _end_logit_diffs(model, part.tokens.repeat(len(chunk), 1), part.pos["END"].repeat(len(chunk)),
                              part.io_tokens.repeat(len(chunk)), part.s_tokens.repeat(len(chunk)),
                              _stacked_ablation_hooks(model, m, v))
        out[torch.tensor(chunk)[:, None], rows[None]] = ld.view(len(chunk), n)
    return out


def _end_logit_diffs(model, tokens, end, io, s, fwd_hooks) -> Float[Tensor, "batch"]:
    """logit(IO) - logit(S) at END with ``fwd_hooks``: as :func:`hooks.run`, but unembedding
    only the IO and S columns."""
    device = model.cfg.device
    with torch.no_grad():
        resid = final_resid(model, tokens, fwd_hooks)
        x = model.ln_final(gather(resid, end)[:, None])[:, 0]
        io, s = io.to(device), s.to(device)
        w = model.W_U[:, io] - model.W_U[:, s]  # [d_model, batch]
        ld = (x * w.T.to(x.dtype)).sum(-1)
        if getattr(model, "b_U", None) is not None:
            ld = ld + (model.b_U[io] - model.b_U[s]).to(x.dtype)
    return ld.float().cpu()


def _stacked_ablation_hooks(model, mask: Bool[Tensor, "layer set batch seq head"],
                            values: Float[Tensor, "layer batch seq head d_head"]) -> list:
    """Hooks on ``hook_z`` for a batch of ``set x batch`` rows (the prompts repeated once per
    set): row ``s * batch + b`` takes ``values[:, b]`` where ``mask[:, s, b]`` is True."""
    device = model.cfg.device
    hooks = []
    for l in range(model.cfg.n_layers):
        if mask[l].any():
            m = mask[l].to(device)[..., None]  # [set, batch, seq, head, 1]
            v = values[l].to(device)  # [batch, seq, head, d_head]

            def hook(z, hook, m=m, v=v):
                grouped = z.reshape(m.shape[0], m.shape[1], *z.shape[1:])
                return torch.where(m, v.to(z.dtype), grouped).reshape(z.shape)

            hooks.append((hook_name("z", l), hook))
    return hooks


def circuit_logit_diff(model, ds: IOIDataset, values: Values, circuit: Circuit,
                       removed: Iterable[Head] = (), batch_size: int = 100) -> Float[Tensor, "batch"]:
    """Per-prompt logit difference of C \\ removed; its mean is F(C \\ K)."""
    return ablated_logit_diff(model, ds, circuit_mask(model, ds, circuit, removed), values, batch_size)


def model_logit_diff(model, ds: IOIDataset, values: Values, removed: Iterable[Head] = (),
                     circuit: Circuit | None = None, k_positions: Literal["all", "kept"] = "all",
                     batch_size: int = 100) -> Float[Tensor, "batch"]:
    """Per-prompt logit difference of M \\ removed; its mean is F(M \\ K).

    ``k_positions="kept"`` ablates the heads of K only at their kept positions in ``circuit``,
    as the authors' completeness.py does (it removes nodes = (head, position)); the criteria
    below use it by default (:data:`K_POSITIONS`). ``"all"`` (this low-level function's
    default, for knockouts with no circuit) ablates them at every position."""
    return ablated_logit_diff(model, ds, model_mask(model, ds, removed, circuit, k_positions), values, batch_size)


def model_mask(model, ds: IOIDataset, removed: Iterable[Head] = (), circuit: Circuit | None = None,
               k_positions: Literal["all", "kept"] = "all") -> Mask:
    """True where a head is ablated in the run of M \\ removed (see :func:`model_logit_diff`)."""
    removed = [tuple(h) for h in removed]
    if k_positions == "all":
        spec = {h: None for h in removed}
    elif k_positions == "kept":
        if circuit is None:
            raise ValueError("k_positions='kept' needs the circuit")
        spec = {h: circuit[h] for h in removed}
    else:
        raise ValueError(f"k_positions must be 'all' or 'kept', got {k_positions!r}")
    return knockout_mask(model, ds, spec)


def removal_logit_diffs(model, ds: IOIDataset, values: Values, circuit: Circuit,
                        sets: Sequence[Iterable[Head]], k_positions: Literal["all", "kept"] = "kept",
                        batch_size: int = 100, max_rows: int = MAX_ROWS,
                        ) -> tuple[Float[Tensor, "set batch"], Float[Tensor, "set batch"]]:
    """Per-prompt logit differences of C \\ K and of M \\ K for every K in ``sets``, the runs
    sharing forwards (:func:`ablated_logit_diffs`); as :func:`circuit_logit_diff` and
    :func:`model_logit_diff` one set at a time."""
    sets = [tuple(tuple(h) for h in k) for k in sets]
    masks = ([circuit_mask(model, ds, circuit, k) for k in sets]
             + [model_mask(model, ds, k, circuit, k_positions) for k in sets])
    ld = ablated_logit_diffs(model, ds, masks, values, batch_size, max_rows)
    return ld[:len(sets)], ld[len(sets):]


# ----------------------------------------------------------------------------- faithfulness


@dataclass
class Faithfulness:
    """F(M) and F(C), per prompt and summarised. F is the mean logit difference."""

    model_ld: Float[Tensor, "batch"]
    circuit_ld: Float[Tensor, "batch"]

    @property
    def F_M(self) -> float:
        return self.model_ld.mean().item()

    @property
    def F_C(self) -> float:
        return self.circuit_ld.mean().item()

    @property
    def ratio(self) -> float:
        """F(C) / F(M), a ratio of means (the paper's faithfulness)."""
        return self.F_C / self.F_M

    @property
    def gap(self) -> float:
        """F(M) - F(C) (the paper: 0.46, 13% of F(M))."""
        return self.F_M - self.F_C

    def summary(self) -> dict[str, float]:
        """Means, ratio, gap and the per-prompt spread (std, quantiles of the difference and
        the median of per-prompt ratios, which is not the paper's ratio of means)."""
        diff = self.circuit_ld - self.model_ld
        q = torch.quantile(diff, torch.tensor([0.1, 0.5, 0.9]))
        return {
            "F(M)": self.F_M,
            "F(C)": self.F_C,
            "F(C)/F(M)": self.ratio,
            "F(M)-F(C)": self.gap,
            "std F(M) per prompt": self.model_ld.std().item(),
            "std F(C) per prompt": self.circuit_ld.std().item(),
            "F(C)-F(M) per prompt, 10%": q[0].item(),
            "F(C)-F(M) per prompt, median": q[1].item(),
            "F(C)-F(M) per prompt, 90%": q[2].item(),
            "median per-prompt F(C)/F(M)": (self.circuit_ld / self.model_ld).median().item(),
        }


def faithfulness(model, ds: IOIDataset, values: Values, circuit: Circuit,
                 batch_size: int = 100) -> Faithfulness:
    """F(C) vs F(M): the circuit run against the unablated model."""
    model_ld = ablated_logit_diff(model, ds, knockout_mask(model, ds, []), values, batch_size)
    return Faithfulness(model_ld, circuit_logit_diff(model, ds, values, circuit, (), batch_size))


# ----------------------------------------------------------------------------- completeness


def random_sets(circuit: Circuit, n_sets: int = paper.RANDOM_SETS["n_sets"],
                p: float = paper.RANDOM_SETS["p"], seed: int = 0) -> dict[str, tuple[Head, ...]]:
    """``n_sets`` random subsets K of the circuit, each head in with probability ``p``
    (default: the authors' 100 sets, p = 1/2; completeness.py, "Do random search too")."""
    rng = random.Random(seed)
    heads = sorted(circuit)
    return {f"random {i}": tuple(h for h in heads if rng.random() < p) for i in range(n_sets)}


def class_sets(classes: Mapping[str, Iterable[Head]], circuit: Circuit | None = None,
               ) -> dict[str, tuple[Head, ...]]:
    """One set K per head class (restricted to the circuit's heads), plus the empty set."""
    out = {"empty": ()}
    for name, heads in classes.items():
        out[name] = tuple(tuple(h) for h in heads if circuit is None or tuple(h) in circuit)
    return out


def completeness(model, ds: IOIDataset, values: Values, circuit: Circuit,
                 sets: Mapping[str, Iterable[Head]], k_positions: Literal["all", "kept"] = "kept",
                 batch_size: int = 100, progress: bool | None = None, max_rows: int = MAX_ROWS) -> list[dict]:
    """For each named set K: F(C \\ K), F(M \\ K) and the incompleteness score
    |F(C \\ K) - F(M \\ K)| (rows of a table; per-prompt values under ``"per prompt"``).
    F(M \\ K) removes K at its kept positions by default (the authors' code; ``"all"``: at
    every position, see :data:`K_POSITIONS`). The sets share forwards, ``max_rows`` rows each
    (:func:`removal_logit_diffs`)."""
    items = [(name, tuple(tuple(h) for h in k)) for name, k in sets.items()]
    per = max(1, max_rows // (2 * min(len(ds), batch_size)))  # sets per forward: C and M of each
    rows = []
    for first in progress_bar(range(0, len(items), per), progress, desc="completeness"):
        chunk = items[first:first + per]
        cs, ms = removal_logit_diffs(model, ds, values, circuit, [k for _, k in chunk], k_positions,
                                     batch_size, max_rows)
        for (name, k), c, m in zip(chunk, cs, ms):
            rows.append({"set": name, "K": k, "F(C\\K)": c.mean().item(), "F(M\\K)": m.mean().item(),
                         "score": abs(c.mean().item() - m.mean().item()),
                         "per prompt": (c, m)})
    return rows


def greedy_completeness(model, ds: IOIDataset, values: Values, circuit: Circuit,
                        n_sets: int = paper.GREEDY["n_sets"], n_steps: int = paper.GREEDY["n_steps"],
                        candidates: int = paper.GREEDY["candidates"], seed: int = 0,
                        k_positions: Literal["all", "kept"] = "kept", batch_size: int = 100,
                        progress: bool | None = None, max_rows: int = MAX_ROWS) -> list[dict]:
    """Greedy search for sets K that maximise |F(C \\ K) - F(M \\ K)|, as the authors'
    final code does (completeness.py, ``new_greedy_search``).

    Each of ``n_sets`` runs starts from K = {} and takes ``n_steps`` steps; a step draws
    ``candidates`` heads at random from C \\ K, scores K + {h} for each, and adds the best one
    if its score beats the current one (the run keeps going when none does). The search runs
    on ``ds`` itself and its scores are the ones reported (no re-scoring on other prompts).
    Defaults: the authors' 10 runs x 10 steps x 10 candidates (:data:`paper.GREEDY`; they
    use 5 candidates for the 13-head naive circuit). F(M \\ K) removes K at its kept positions
    (``k_positions``, as :func:`completeness`).

    Returns one row per run: the final K, its score, F(C \\ K) and F(M \\ K), and the K after
    each accepted step.

    The candidates of a step are scored together (C \\ K and M \\ K of each in shared forwards
    of at most ``max_rows`` rows, :func:`removal_logit_diffs`); the draws and choices are those
    of scoring them one by one.
    """
    rng = random.Random(seed)
    memo: dict[frozenset, tuple[float, float]] = {}

    def evaluate_all(ks: Sequence[tuple[Head, ...]]) -> None:
        todo = list({frozenset(k): k for k in ks if frozenset(k) not in memo}.values())
        if todo:
            cs, ms = removal_logit_diffs(model, ds, values, circuit, todo, k_positions, batch_size, max_rows)
            for k, c, m in zip(todo, cs, ms):
                memo[frozenset(k)] = (c.mean().item(), m.mean().item())

    def evaluate(k: tuple[Head, ...]) -> tuple[float, float]:
        evaluate_all([k])
        return memo[frozenset(k)]

    def score(k: tuple[Head, ...]) -> float:
        c, m = evaluate(k)
        return abs(c - m)

    rows = []
    for run_i in progress_bar(range(n_sets), progress, desc="greedy completeness"):
        k: tuple[Head, ...] = ()
        best = score(k)
        trajectory = []
        for _ in range(n_steps):
            pool = sorted(h for h in circuit if h not in k)
            if not pool:
                break
            tried = rng.sample(pool, min(candidates, len(pool)))
            evaluate_all([k + (h,) for h in tried])
            scores = [score(k + (h,)) for h in tried]
            i = max(range(len(tried)), key=scores.__getitem__)
            if scores[i] > best:
                k, best = k + (tried[i],), scores[i]
                trajectory.append((k, best))
        c, m = evaluate(k)
        rows.append({"run": run_i, "K": k, "score": best, "F(C\\K)": c, "F(M\\K)": m,
                     "trajectory": trajectory})
    return rows


def fold_backups(classes: Mapping[str, Iterable[Head]]) -> dict[str, list[Head]]:
    """The authors' class grouping (ioi_circuit_extraction.py, CIRCUIT): the Backup Name Movers
    folded into the Name Movers, 6 classes. Other classes unchanged, order kept."""
    out: dict[str, list[Head]] = {}
    for name, heads in classes.items():
        target = "Name Mover" if name == "Backup Name Mover" else name
        out.setdefault(target, [])
        out[target] += [tuple(h) for h in heads if tuple(h) not in out[target]]
    return out


class AblatedRuns:
    """Every ablated run of a chapter, made once: the per-prompt logit differences of the
    circuit minus K (:meth:`F_C`) and of the model minus K (:meth:`F_M`), kept by what was
    ablated, so that faithfulness, its variants and every family of sets K share their runs.

    ``values`` are the default ablation values; ``k_positions`` says how F(M \\ K) removes K
    by default (``"kept"``: at its kept positions in the circuit, the authors' completeness.py;
    ``"all"``: everywhere; see :data:`K_POSITIONS`)."""

    def __init__(self, model, ds: IOIDataset, values: Values, k_positions: Literal["all", "kept"] = "kept"):
        self.model, self.ds, self.values, self.k_positions = model, ds, values, k_positions
        self.runs: dict = {}

    @staticmethod
    def _circuit_key(circ: Circuit) -> tuple:
        return tuple((h, tuple(p) if p is not None else None) for h, p in sorted(circ.items()))

    def _m_key(self, removed, circ, k_positions) -> tuple:
        if not removed:
            k_positions = "all"
        return ("M", frozenset(removed), k_positions, self._circuit_key(circ) if k_positions == "kept" else None)

    def F_C(self, circ: Circuit, removed: Iterable[Head] = (), vals: Values | None = None) -> Float[Tensor, "batch"]:
        """Per-prompt logit diff of the circuit minus ``removed`` (under ``vals``, default
        ``values``)."""
        vals = self.values if vals is None else vals
        key = ("C", id(vals), self._circuit_key(circ), frozenset(removed))
        if key not in self.runs:
            self.runs[key] = circuit_logit_diff(self.model, self.ds, vals, circ, removed)
        return self.runs[key]

    def F_M(self, removed: Iterable[Head] = (), circ: Circuit | None = None,
            k_positions: Literal["all", "kept"] | None = None) -> Float[Tensor, "batch"]:
        """Per-prompt logit diff of the model minus ``removed``: knocked out at their kept
        positions in ``circ`` (``"kept"``) or everywhere (``"all"``); default ``k_positions``."""
        k_positions = self.k_positions if k_positions is None else k_positions
        removed = tuple(removed)
        if not removed:
            k_positions = "all"  # nothing removed: the same run either way
        key = self._m_key(removed, circ, k_positions)
        if key not in self.runs:
            self.runs[key] = model_logit_diff(self.model, self.ds, self.values, removed, circ, k_positions)
        return self.runs[key]

    def prefetch(self, circ: Circuit, sets: Iterable[Iterable[Head]]) -> None:
        """Every F_C(circ, K), F_M(K, circ) and F_M(K, circ, "all") for K in ``sets`` not run
        yet, many sets per forward (:func:`ablated_logit_diffs`; the same numbers as one run
        per set)."""
        model, ds = self.model, self.ds
        todo = {}
        for k in map(tuple, sets):
            todo[("C", id(self.values), self._circuit_key(circ), frozenset(k))] = (
                lambda k=k: circuit_mask(model, ds, circ, k))
            for kp in (self.k_positions, "all"):
                todo[self._m_key(k, circ, kp)] = lambda k=k, kp=kp: model_mask(model, ds, k, circ, kp)
        todo = {key: mask for key, mask in todo.items() if key not in self.runs}
        if todo:
            self.runs.update(zip(todo, ablated_logit_diffs(model, ds, [mask() for mask in todo.values()],
                                                           self.values)))

    def greedy_sets(self, circ: Circuit, label: str, n_sets: int, n_steps: int, candidates: int,
                    seed: int = 0) -> dict[str, tuple[Head, ...]]:
        """The sets K of :func:`greedy_completeness` (one per run), named ``"{label} greedy {run}"``."""
        if not circ:  # no head to put in K
            return {}
        runs = greedy_completeness(self.model, self.ds, self.values, circ, n_sets=n_sets, n_steps=n_steps,
                                   candidates=candidates, seed=seed, k_positions=self.k_positions,
                                   progress=False)
        return {f"{label} greedy {r['run']}": r["K"] for r in runs}

    def completeness_table(self, circ: Circuit, classes_by_name: Mapping[str, Iterable[Head]], label: str,
                           n_random_sets: int, n_sets: int, n_steps: int, candidates: int, seed: int = 0):
        """F(C∖K), F(M∖K) and |F(C∖K) - F(M∖K)| for random, class, empty and greedy sets K (a
        DataFrame, one row per K); M∖K with K at its kept positions (default) and, as the
        variant, at every position. The class sets are grouped as the authors' code groups them
        (:func:`fold_backups`), with the 7-class grouping's sets added where they differ."""
        import pandas as pd

        code_groups = fold_backups(classes_by_name)  # the authors' 6-class grouping
        sets = {f"random {i}": k for i, k in enumerate(random_sets(circ, n_random_sets, seed=seed).values())}
        sets.update({f"class: {n}": k for n, k in class_sets(code_groups, circ).items() if n != "empty"})
        code_sets = {frozenset(k) for n, k in sets.items() if n.startswith("class")}
        sets.update({f"class (7-class grouping): {n}": k for n, k in class_sets(classes_by_name, circ).items()
                     if n != "empty" and frozenset(k) not in code_sets})
        sets["empty"] = ()
        greedy = self.greedy_sets(circ, label, n_sets, n_steps, candidates, seed)
        sets.update(greedy or {f"{label} greedy (no heads)": ()})
        self.prefetch(circ, sets.values())
        rows = []
        for name, k in sets.items():
            c, m = self.F_C(circ, k).mean().item(), self.F_M(k, circ).mean().item()
            m_all = self.F_M(k, circ, "all").mean().item()
            kind = ("greedy" if name.startswith(label) else "class (7 classes)" if name.startswith("class (7")
                    else name.split(" ")[0].rstrip(":"))
            rows.append({"circuit": label, "K": name, "kind": kind, "size of K": len(k),
                         "heads": " ".join(paper.head_name(h) for h in sorted(k)),
                         "F(C∖K)": c, "F(M∖K)": m, "incompleteness": abs(c - m),
                         "F(M∖K), K everywhere": m_all, "incompleteness, K everywhere": abs(c - m_all)})
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- minimality


def same_class_k(classes: Mapping[str, Iterable[Head]]) -> dict[Head, tuple[Head, ...]]:
    """K(v) = the other heads of v's class: a generic choice for circuits other than the
    paper's (for the paper's circuit use :data:`paper.MINIMALITY_K`). With the classes grouped
    as the authors' code does (:func:`fold_backups`) this is their rule for every class but
    the Name Movers (see :func:`ordered_class_k`)."""
    out = {}
    for heads in classes.values():
        heads = [tuple(h) for h in heads]
        for v in heads:
            out[v] = tuple(h for h in heads if h != v)
    return out


def ordered_class_k(classes: Mapping[str, Sequence[Head]], order: str = "Name Mover",
                    ) -> dict[Head, tuple[Head, ...]]:
    """The authors' rule (minimality.py) applied to any circuit's classes: K(v) = the other
    heads of v's class, except in class ``order`` (their "name mover", Backup Name Movers
    included), where K(v) = the heads listed before v. The order of each list is the caller's
    (the authors list their Name Movers "by importance"). Their two special cases (9.0, 11.9,
    5.8, 5.9) name GPT-2 small heads and are in :data:`paper.MINIMALITY_K` only."""
    out = same_class_k(classes)
    heads = [tuple(h) for h in classes.get(order, [])]
    for i, v in enumerate(heads):
        out[v] = tuple(heads[:i])
    return out


def minimality(model, ds: IOIDataset, values: Values, circuit: Circuit,
               k_sets: Mapping[Head, Iterable[Head]] | None = None, batch_size: int = 100,
               progress: bool | None = None, max_rows: int = MAX_ROWS) -> dict[Head, dict]:
    """Minimality score of each circuit head v: |F(C \\ (K u {v})) - F(C \\ K)|.

    ``k_sets`` gives K for each v (default: K = {} for every head); the authors' choices are
    :data:`paper.MINIMALITY_K` (``"code"``, default in the book, and ARENA's ``"arena"``);
    :func:`ordered_class_k` and :func:`same_class_k` build them for other circuits. The paper reports
    the scores relative to F(M) (every head >= 1%): ``"relative"`` in each row. The circuit runs
    share forwards of at most ``max_rows`` rows (:func:`ablated_logit_diffs`).
    """
    k_sets = k_sets or {}
    ks = {v: tuple(tuple(h) for h in k_sets.get(v, ()) if tuple(h) != v) for v in sorted(circuit)}
    removed = {frozenset(r): r for v, k in ks.items() for r in (k, k + (v,))}  # each distinct C \\ K once
    masks = [knockout_mask(model, ds, [])] + [circuit_mask(model, ds, circuit, r) for r in removed.values()]
    lds = ablated_logit_diffs(model, ds, masks, values, batch_size, max_rows, progress=progress,
                              desc="minimality").mean(dim=1)
    f_m = lds[0].item()
    memo = {key: lds[i + 1].item() for i, key in enumerate(removed)}

    def f_c(r: tuple[Head, ...]) -> float:
        return memo[frozenset(r)]

    out = {}
    for v in sorted(circuit):
        k = ks[v]
        without_k, without_kv = f_c(k), f_c(k + (v,))
        out[v] = {"K": k, "F(C\\K)": without_k, "F(C\\(K+v))": without_kv,
                  "score": abs(without_kv - without_k), "relative": abs(without_kv - without_k) / abs(f_m)}
    return out
