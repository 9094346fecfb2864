"""Activation patching and path patching (Wang et al. 2023, App. B, Algorithm 1).

Conventions shared by every function here:

* Datasets, not raw tokens: positions are named (``"IO"``, ``"S1"``, ``"S1+1"``, ``"S2"``,
  ``"END"``) and taken per prompt from ``ds.pos``, since prompts of different templates have
  different lengths.
* A *metric* maps the logits at END, ``[batch, vocab]``, to a scalar (a ``[batch]`` result is
  averaged). The default is the mean logit difference logit(IO) - logit(S) of the run
  dataset; every function of :mod:`ioi_helpers.metrics` accepts END logits.
* Heads are ``(layer, head)`` tuples; results over all heads are ``[layer, head]`` tensors.

Activation patching (:func:`act_patch_heads`, :func:`act_patch_blocks`) runs ``run`` and
replaces one activation by its value on ``source``. Over all positions at once (heads) or by
absolute position (blocks) it calls ``transformer_lens.patching`` (same semantics: TL's
"corrupted" run is our ``run``, its "clean cache" our ``source``). By *named* position, which
TL does not have (it indexes one absolute position for the whole batch), it uses our own
engine, checked against TL on single-template data where the two coincide.

Path patching (:func:`path_patch`) is the paper's Algorithm 1 with x_orig = ``orig`` (p_IOI)
and x_new = ``new`` (p_ABC); see its docstring. ``transformer_lens.patching``'s
``get_act_patch_direct_path`` is a different quantity, so it is not used: it adds the
sender's clean-minus-corrupted write to one receiver head's input at *every* position of the
*corrupted* run and keeps only the direct edge, whereas the paper recomputes the MLPs between
sender and receiver (so sender -> MLP -> receiver paths count), patches the receiver at one
named position per prompt, runs x_orig with the sender taken from x_new, and also has the
logits as a receiver.

How the fast path works (all exact, no approximation):

(C) With every head frozen to its x_orig output, attention moves nothing new between
    positions: the residual stream at a position p after the sender is
    ``resid_pre_orig[L_s][p] + sum_l (attn_out_orig[l][p] + sender delta_l[p] + MLP_l(...))``.
    So step (C) is computed only at the receiver position, only through the MLPs and
    LayerNorms between the sender layer and the receiver layer, for a batch of senders at once.
(D) For the logits receiver, (D) is the final LayerNorm and unembedding of the IO and S
    columns at END. For q/k/v receivers at position P, only positions >= P change (causal
    attention), from the receiver layer on; keys/values of positions < P come from the
    x_orig cache. Our window engine computes exactly that, for many senders in one batch.
Senders at or after the (last) receiver layer cannot reach it: their effect is exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from . import hooks, metrics
from .dataset import POSITIONS, IOIDataset
from .hooks import Head, gather, hook_name, progress_bar

Metric = Callable[[Float[Tensor, "batch vocab"]], Tensor]
HEAD_COMPONENTS = ("z", "q", "k", "v")
BLOCK_COMPONENTS = ("resid_pre", "resid_mid", "attn_out", "mlp_out")
DEFAULT_MAX_TOKENS = 8192  # residual vectors per batched chunk (bounds peak memory)


# ----------------------------------------------------------------------------- caches


@dataclass
class RunCache:
    """Activations of one clean run of a dataset, kept for many patched runs.

    ``resid_pre[l]`` is the residual entering block ``l`` (``resid_pre[n_layers]`` is the
    final residual stream), ``resid_mid[l]`` the one between attention and MLP, ``z[l]`` the
    per-head attention outputs before ``W_O``; all ``[batch, seq, ...]``. Lists are empty
    when not cached. ``end_logits`` are the logits at END.
    """

    ds: IOIDataset
    end_logits: Float[Tensor, "batch vocab"]
    resid_pre: list[Tensor] = field(default_factory=list)
    resid_mid: list[Tensor] = field(default_factory=list)
    z: list[Tensor] = field(default_factory=list)
    extra: dict[str, Tensor] = field(default_factory=dict)
    knockout: "Knockout | None" = None  # the base knockout the run was made under
    _kv: dict = field(default_factory=dict, repr=False)

    def kv(self, model, layer: int) -> tuple[Tensor, Tensor]:
        """Keys and values of every head at every position, ``[batch, seq, head, d_head]``
        (computed from ``resid_pre`` once, then kept)."""
        if layer not in self._kv:
            h = model.blocks[layer].ln1(self.resid_pre[layer])
            self._kv[layer] = tuple(einops.einsum(h, W, "n s d, h d e -> n s h e") + b
                                    for W, b in (_qkv_weights(model, c, layer) for c in "kv"))
        return self._kv[layer]


@dataclass
class Knockout:
    """A base intervention kept on in every run: head outputs (``hook_z``) replaced by
    ``values`` where ``mask`` is True, both indexed [layer, prompt, position, head] for
    the x_orig dataset (see :mod:`ioi_helpers.ablation`)."""

    mask: Bool[Tensor, "layer batch seq head"]
    values: Float[Tensor, "layer batch seq head d_head"]

    def hooks(self, model) -> list:
        from .ablation import ablation_hooks

        return ablation_hooks(model, self.mask, self.values)


def cache_run(model, ds: IOIDataset, resid_pre: bool = True, resid_mid: bool = True,
              z: bool = True, extra: Sequence[str] = (), knockout: Knockout | None = None,
              ) -> RunCache:
    """Run ``ds`` once (under ``knockout`` if given) and keep what patching needs (residual
    streams and/or head outputs, plus any hooks named in ``extra``)."""
    n = model.cfg.n_layers
    names = list(extra)
    if resid_pre:
        names += [hook_name("resid_pre", l) for l in range(n)] + ["ln_final.hook_in"]
    if resid_mid:
        names += [hook_name("resid_mid", l) for l in range(n)]
    if z:
        names += [hook_name("z", l) for l in range(n)]
    fwd = knockout.hooks(model) if knockout is not None else []
    end_logits, store = hooks.run(model, ds.tokens, ds.pos["END"], fwd_hooks=fwd, cache=names)
    out = RunCache(ds=ds, end_logits=end_logits, extra={k: store[k] for k in extra},
                   knockout=knockout)
    if resid_pre:
        out.resid_pre = [store[hook_name("resid_pre", l)] for l in range(n)]
        out.resid_pre.append(store["ln_final.hook_in"])
    if resid_mid:
        out.resid_mid = [store[hook_name("resid_mid", l)] for l in range(n)]
    if z:
        out.z = [store[hook_name("z", l)] for l in range(n)]
    return out


@dataclass
class PathPatchingCaches:
    """The x_orig and x_new runs path patching reuses across calls (steps A and B)."""

    orig: RunCache
    new: RunCache


def cache_path_patching(model, orig: IOIDataset, new: IOIDataset,
                        knockout: Knockout | None = None) -> PathPatchingCaches:
    """Steps (A) and (B) of Algorithm 1, once: pass the result to several :func:`path_patch`
    calls on the same pair of datasets (and the same ``knockout``)."""
    _check_lengths(orig, new)
    return PathPatchingCaches(orig=cache_run(model, orig, knockout=knockout),
                              new=cache_run(model, new, resid_pre=False, resid_mid=False,
                                            knockout=knockout))


def make_knockout(model, orig: IOIDataset, heads, values: Tensor | None = None,
                  reference: IOIDataset | None = None) -> Knockout:
    """A :class:`Knockout` of ``heads`` (a list of heads, ablated at every position, or a
    mapping head -> named positions) with ``values`` (default: the paper's knockout, means
    over ``reference`` = p_ABC per template group and position)."""
    from . import ablation

    if values is None:
        if reference is None:
            raise ValueError("knockout values need a reference dataset (p_ABC) or explicit values")
        values = ablation.ablation_values(model, orig, reference, "mean")
    return Knockout(ablation.knockout_mask(model, orig, heads), values)


# ----------------------------------------------------------------------------- helpers


def _check_lengths(a: IOIDataset, b: IOIDataset) -> None:
    if a.tokens.shape != b.tokens.shape or not torch.equal(a.lengths, b.lengths):
        raise ValueError("the two datasets must have the same prompt lengths (use make_abc_dataset)")


def _check_pair(a: IOIDataset, b: IOIDataset) -> None:
    _check_lengths(a, b)
    for k in POSITIONS:
        if not torch.equal(a.pos[k], b.pos[k]):
            raise ValueError(f"position {k} differs between the two datasets")


def _check_supported(model) -> None:
    """The fast engine re-implements GPT-2's attention with the processed weights."""
    cfg = model.cfg
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    ok = (getattr(cfg, "positional_embedding_type", "standard") == "standard"
          and getattr(cfg, "normalization_type", "LN") in ("LN", "LNPre")
          and getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads))
    if hf_cfg is not None:
        ok = ok and getattr(hf_cfg, "scale_attn_weights", True) and not getattr(
            hf_cfg, "scale_attn_by_inverse_layer_idx", False)
    if not ok:
        raise NotImplementedError("the fast patching engine supports GPT-2-style models only")


def default_metric(ds: IOIDataset) -> Metric:
    """Mean logit difference logit(IO) - logit(S) at END over ``ds``."""
    return lambda end_logits: metrics.logit_diff(end_logits, ds).mean()


def _value(metric: Metric, end_logits: Tensor) -> float:
    return torch.as_tensor(metric(end_logits)).float().mean().item()


def _qkv_weights(model, c: str, layer: int) -> tuple[Tensor, Tensor]:
    """Processed ``W_c``, ``b_c`` of one layer (views kept by the bridge, no copies)."""
    attn = model.blocks[layer].attn
    return getattr(attn, f"W_{c.upper()}"), getattr(attn, f"b_{c.upper()}")


def _lead(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """Flatten leading dims to [batch, pos, d] for the bridge's LN/MLP modules."""
    return x.reshape(-1, x.shape[-2], x.shape[-1]), x.shape


def _ln(module, x: Tensor) -> Tensor:
    flat, shape = _lead(x)
    return module(flat).reshape(shape)


def _mlp(model, layer: int, x: Tensor) -> Tensor:
    block = model.blocks[layer]
    flat, shape = _lead(x)
    return block.mlp(block.ln2(flat)).reshape(shape)


# edit(layer, stage, x, groups) -> x: groups is the slice of all groups that x holds
Edit = Callable[[int, str, Tensor, slice], Tensor]


def _window_forward(model, cache: RunCache, layer0: int, pos: Int[Tensor, "batch"],
                    groups: slice, edit: Edit) -> Float[Tensor, "group batch d_model"]:
    """Run ``cache.ds`` from block ``layer0`` to the end, for the edited copies ``groups`` at
    once, computing only positions ``pos[i] .. END[i]`` of each prompt.

    Positions before ``pos[i]`` are unaffected by edits at or after ``pos[i]`` (causal
    attention) and read their keys/values from the cache. ``edit(layer, stage, x, groups)``
    may change ``x`` at stage ``resid_pre`` ``[g, n, w, d]``, ``q``/``k``/``v``/``z``
    ``[g, n, w, head, d_head]``, ``attn_out``/``mlp_out`` ``[g, n, w, d]``; window index 0 is
    ``pos``. Returns the final residual stream at END, ``[group, batch, d_model]``.
    """
    n_groups = groups.stop - groups.start
    ds = cache.ds
    dev = cache.resid_pre[layer0].device
    pos, end = pos.to(dev), ds.pos["END"].to(dev)
    if (pos > end).any():
        raise ValueError("a patched position lies after END")
    n, seq = ds.tokens.shape
    width = int((end - pos).max()) + 1
    idx = (pos[:, None] + torch.arange(width, device=dev)[None]).clamp(max=seq - 1)  # [n, w]
    rows = torch.arange(n, device=dev)[:, None]
    x = cache.resid_pre[layer0][rows, idx].expand(n_groups, n, width, -1)
    prefix_ok = torch.arange(seq, device=dev)[None, :] < pos[:, None]  # key < pos: cached
    prefix_mask = (~prefix_ok)[None, :, None, None, :]  # [1, n, 1, 1, seq]
    window_mask = torch.ones(width, width, dtype=torch.bool, device=dev).triu(1)  # key > query
    scale = math.sqrt(model.cfg.d_head)
    ko = cache.knockout
    for l in range(layer0, model.cfg.n_layers):
        x = edit(l, "resid_pre", x, groups)
        h = _ln(model.blocks[l].ln1, x)
        prefix = dict(zip("kv", cache.kv(model, l)))  # the cached run's keys/values
        qkv = {}
        for c in "qkv":
            W, b = _qkv_weights(model, c, l)
            qkv[c] = edit(l, c, einops.einsum(h, W, "g n w d, h d e -> g n w h e") + b, groups)
        s_pre = einops.einsum(qkv["q"], prefix["k"], "g n w h e, n s h e -> g n h w s") / scale
        s_win = einops.einsum(qkv["q"], qkv["k"], "g n w h e, g n u h e -> g n h w u") / scale
        s_pre = s_pre.masked_fill(prefix_mask, float("-inf"))
        s_win = s_win.masked_fill(window_mask, float("-inf"))
        p = torch.cat([s_pre, s_win], dim=-1).softmax(-1)
        z = (einops.einsum(p[..., :seq], prefix["v"], "g n h w s, n s h e -> g n w h e")
             + einops.einsum(p[..., seq:], qkv["v"], "g n h w u, g n u h e -> g n w h e"))
        if ko is not None and ko.mask[l].any():  # the base knockout, at the window positions
            m = ko.mask[l].to(dev)[rows, idx][..., None]  # [n, w, head, 1]
            z = torch.where(m, ko.values[l].to(dev)[rows, idx], z)
        z = edit(l, "z", z, groups)
        attn = model.blocks[l].attn
        attn_out = einops.einsum(z, attn.W_O, "g n w h e, h e d -> g n w d") + attn.b_O
        x = x + edit(l, "attn_out", attn_out, groups)
        x = x + edit(l, "mlp_out", _mlp(model, l, x), groups)
    return x[:, rows[:, 0], end - pos]


def _end_metric_values(model, ds: IOIDataset, final: Float[Tensor, "g n d"],
                       metric: Metric | None) -> Float[Tensor, "g"]:
    """Metric of each group from its final residual stream at END."""
    x = _ln(model.ln_final, final[:, :, None])[:, :, 0]
    if metric is None:  # logit diff from two unembedding columns only
        io, s = ds.io_tokens.to(x.device), ds.s_tokens.to(x.device)
        W_U, b_U = model.W_U, model.b_U
        direction = W_U[:, io] - W_U[:, s]  # [d, n]
        bias = b_U[io] - b_U[s]
        return (einops.einsum(x, direction, "g n d, d n -> g n") + bias).mean(-1).cpu()
    return torch.tensor([_value(metric, model.unembed(xg[:, None])[:, 0]) for xg in x])


def _chunks(n_items: int, per_item: int, max_tokens: int) -> list[slice]:
    size = max(1, max_tokens // max(1, per_item))
    return [slice(i, min(i + size, n_items)) for i in range(0, n_items, size)]


# ----------------------------------------------------------------------------- activation patching


def act_patch_heads(model, ds: IOIDataset, source: IOIDataset, component: str = "z",
                    positions: Sequence[str] | None = None, metric: Metric | None = None,
                    max_tokens: int = DEFAULT_MAX_TOKENS, progress: bool | None = None,
                    ) -> Float[Tensor, "layer head"] | Float[Tensor, "layer position head"]:
    """Activation patching of each head's output (``component="z"``) or query/key/value.

    Runs ``ds`` and replaces one head's ``component`` by its value on ``source`` (a dataset
    with the same prompt lengths, e.g. its p_ABC twin, or the reverse for denoising);
    returns the metric of each patched run.

    * ``positions=None``: at all positions at once -> ``[layer, head]``; this calls
      ``transformer_lens.patching.get_act_patch_attn_head_{out,q,k,v}_all_pos``.
    * ``positions=["S2", "END", ...]``: at each named position, per prompt ->
      ``[layer, position, head]`` (TL's ``*_by_pos`` layout, with named positions where TL
      has one absolute index for the whole batch).
    """
    if component not in HEAD_COMPONENTS:
        raise ValueError(f"component must be one of {HEAD_COMPONENTS}, got {component!r}")
    _check_pair(ds, source)
    if positions is None:
        from transformer_lens import patching as tl

        fn = {"z": tl.get_act_patch_attn_head_out_all_pos, "q": tl.get_act_patch_attn_head_q_all_pos,
              "k": tl.get_act_patch_attn_head_k_all_pos, "v": tl.get_act_patch_attn_head_v_all_pos}
        return _tl_sweep(model, fn[component], ds, source, component, metric, progress)
    _check_supported(model)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    base = cache_run(model, ds, resid_mid=False, z=False)
    src = cache_run(model, source, resid_pre=False, resid_mid=False, z=False,
                    extra=[hook_name(component, l) for l in range(n_layers)])
    out = torch.zeros(n_layers, len(positions), n_heads)
    heads = torch.arange(n_heads, device=model.cfg.device)
    cells = [(l, j, name) for l in range(n_layers) for j, name in enumerate(positions)]
    for l, j, name in progress_bar(cells, progress, desc=f"patching {component} by position"):
        pos = hooks.positions(ds, name)
        value = gather(src.extra[hook_name(component, l)], pos)  # [n, head, d_head]

        def edit(layer, stage, x, groups, l=l, value=value):
            if layer == l and stage == component:  # copy g of the run patches head g
                x = x.clone()
                hs = heads[groups]
                x[torch.arange(len(hs), device=x.device), :, 0, hs] = value[:, hs].transpose(0, 1)
            return x

        out[l, j] = _metric_per_group(model, base, l, pos, n_heads, edit, metric, max_tokens)
    return out


def act_patch_blocks(model, ds: IOIDataset, source: IOIDataset, component: str = "resid_pre",
                     positions: Sequence[str] | None = POSITIONS, metric: Metric | None = None,
                     progress: bool | None = None,
                     ) -> Float[Tensor, "layer position"] | Float[Tensor, "layer seq"]:
    """Activation patching of the residual stream (``resid_pre``, ``resid_mid``) or of an
    attention/MLP layer's output (``attn_out``, ``mlp_out``), by layer and position.

    * ``positions=["S1", "S2", ...]`` (default: all named positions): per prompt ->
      ``[layer, position]``.
    * ``positions=None``: by absolute position -> ``[layer, seq]``; this calls
      ``transformer_lens.patching.get_act_patch_{resid_pre,resid_mid,attn_out,mlp_out}``
      (meaningful when all prompts share a template; otherwise a column mixes token roles).
    """
    if component not in BLOCK_COMPONENTS:
        raise ValueError(f"component must be one of {BLOCK_COMPONENTS}, got {component!r}")
    _check_pair(ds, source)
    if positions is None:
        from transformer_lens import patching as tl

        fn = getattr(tl, f"get_act_patch_{component}")
        return _tl_sweep(model, fn, ds, source, component, metric, progress)
    _check_supported(model)
    n_layers = model.cfg.n_layers
    base = cache_run(model, ds, resid_mid=False, z=False)
    src = cache_run(model, source, resid_pre=False, resid_mid=False, z=False,
                    extra=[hook_name(component, l) for l in range(n_layers)])
    # resid_mid = resid_pre + attn_out and resid_pre at the patched cell is the run's own
    # value, so resid_mid is set by setting attn_out := source resid_mid - resid_pre.
    stage = "attn_out" if component == "resid_mid" else component
    out = torch.zeros(n_layers, len(positions))
    cells = [(l, j, name) for l in range(n_layers) for j, name in enumerate(positions)]
    for l, j, name in progress_bar(cells, progress, desc=f"patching {component} by position"):
        pos = hooks.positions(ds, name)
        value = gather(src.extra[hook_name(component, l)], pos)  # [n, d]
        if component == "resid_mid":
            value = value - gather(base.resid_pre[l], pos)

        def edit(layer, st, x, groups, l=l, value=value):
            if layer == l and st == stage:
                x = x.clone()
                x[:, :, 0] = value
            return x

        out[l, j] = _metric_per_group(model, base, l, pos, 1, edit, metric, DEFAULT_MAX_TOKENS)[0]
    return out


def _metric_per_group(model, base: RunCache, layer0: int, pos: Tensor, n_groups: int,
                      edit: Edit, metric: Metric | None, max_tokens: int) -> Tensor:
    """Window forward for ``n_groups`` edited copies, chunked to bound memory."""
    width = int((base.ds.pos["END"] - pos).max()) + 1
    vals = []
    for sl in _chunks(n_groups, len(base.ds) * width, max_tokens):
        final = _window_forward(model, base, layer0, pos, sl, edit)
        vals.append(_end_metric_values(model, base.ds, final, metric))
    return torch.cat(vals)


def _tl_sweep(model, fn, ds: IOIDataset, source: IOIDataset, component: str,
              metric: Metric | None, progress: bool | None) -> Tensor:
    """Call a ``transformer_lens.patching`` sweep (TL's "corrupted tokens" = ``ds``, its
    "clean cache" = ``source``) with our metric fed END logits, and our progress policy (TL
    always draws a tqdm bar: its module-level ``tqdm`` is swapped for a silenceable one)."""
    import functools

    import transformer_lens.patching as tl
    from tqdm.auto import tqdm
    from transformer_lens.utilities import get_act_name

    metric = metric or default_metric(ds)
    device = model.cfg.device
    names = [get_act_name(component, l) for l in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, src_cache = model.run_with_cache(source.tokens.to(device), names_filter=names)
    saved = tl.tqdm
    tl.tqdm = functools.partial(tqdm, disable=not hooks.progress_enabled(progress))
    try:
        with torch.no_grad():
            out = fn(model, ds.tokens.to(device), src_cache,
                     lambda logits: torch.as_tensor(metric(metrics.at_end(logits, ds))).mean())
    finally:
        tl.tqdm = saved
    return out.detach().cpu()


# ----------------------------------------------------------------------------- path patching

Receivers = Literal["logits"] | Sequence[Head]


@dataclass
class PathPatchingResult:
    """Metric after path patching, per sender (``[layer, head]``) or per sender group
    (``[group]``), with the unpatched values it is compared to."""

    patched: Tensor
    clean: float  # metric on x_orig
    corrupted: float  # metric on x_new (same answer tokens)
    senders: list[tuple[Head, ...]]
    receivers: str

    @property
    def delta(self) -> Tensor:
        """Change in the metric: patched - clean (0 for senders that cannot reach R)."""
        return self.patched - self.clean

    @property
    def relative(self) -> Tensor:
        """The paper's score: change as a fraction of the clean value, (patched - clean) / clean."""
        return self.delta / abs(self.clean)

    @property
    def normalized(self) -> Tensor:
        """``metrics.normalized_patching_metric``: (patched - clean) / (clean - corrupted);
        0 = unchanged, -1 = as bad as x_new."""
        return metrics.normalized_patching_metric(self.patched, self.clean, self.corrupted)


def _groups(model, senders) -> tuple[list[tuple[Head, ...]], bool]:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if senders is None:
        return [((l, h),) for l in range(n_layers) for h in range(n_heads)], True
    groups = []
    for s in senders:
        if len(s) == 2 and all(isinstance(v, int) for v in s):
            g = (tuple(s),)
        else:
            g = tuple(tuple(h) for h in s)
        if not g:
            raise ValueError("an empty sender group")
        for l, h in g:
            if not (0 <= l < n_layers and 0 <= h < n_heads):
                raise ValueError(f"no head {l}.{h} in this model")
        groups.append(g)
    return groups, False


def path_patch(model, orig: IOIDataset, new: IOIDataset, receivers: Receivers = "logits",
               receiver_input: str | Sequence[str] = "q", position: str = "END",
               senders: Sequence[Head | Sequence[Head]] | None = None,
               metric: Metric | None = None, caches: PathPatchingCaches | None = None,
               knockout=None, max_tokens: int = DEFAULT_MAX_TOKENS,
               progress: bool | None = None) -> PathPatchingResult:
    """Path patching, the paper's Algorithm 1, for many senders in one call.

    For each sender group h (one head, or a set of heads patched together):

    (A) run x_new = ``new`` and record h's output; (B) run x_orig = ``orig`` and record every
    head's output; (C) run x_orig with every head frozen to its x_orig output except h, which
    gets its x_new output (at all positions), MLPs and LayerNorms recomputed, and record the
    receivers' inputs; (D) run x_orig with the receivers' inputs patched to those values at
    ``position`` (per prompt), everything downstream recomputed; score = metric.

    ``receivers``: ``"logits"`` (the final residual stream at END; ``position`` must be
    ``"END"``) or a list of heads ``[(layer, head), ...]`` whose ``receiver_input`` (``"q"``,
    ``"k"``, ``"v"``, or several, e.g. ``"kv"``) is patched at ``position`` (``"END"``,
    ``"S2"``, ``"S1+1"``, ...). ``senders``: ``None`` = every head alone (result
    ``[layer, head]``), else a list of heads or head groups (result ``[group]``).
    ``metric``: END logits -> scalar (default: mean logit diff of ``orig``).

    ``knockout``: heads (or head -> positions, or a :class:`Knockout`) mean-ablated in every
    run, steps (A)-(D): path patching in the model with those heads knocked out, as for the
    Backup Name Movers (Sec. 3.4). Values: p_ABC means from ``new`` (pass a
    :class:`Knockout` from :func:`make_knockout` for others).

    Senders whose every head sits at or after the last receiver layer cannot reach a receiver:
    their effect is exactly 0 (patched = clean). Pass ``caches`` from
    :func:`cache_path_patching` to reuse steps (A)/(B) across calls. ``orig`` and ``new``
    need the same prompt lengths (the sender is patched position by position).
    """
    _check_supported(model)
    _check_lengths(orig, new)
    if knockout is not None and not isinstance(knockout, Knockout):
        knockout = make_knockout(model, orig, knockout, reference=new)
    if caches is None:
        caches = cache_path_patching(model, orig, new, knockout)
    if caches.orig.ds is not orig or caches.new.ds is not new:
        raise ValueError("caches were computed for other datasets")
    if (caches.orig.knockout is None) != (knockout is None) or (
            knockout is not None and caches.orig.knockout is not knockout):
        raise ValueError("caches were computed under another knockout: pass the same Knockout "
                         "object to cache_path_patching and path_patch")
    groups, all_heads = _groups(model, senders)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    inputs = tuple(receiver_input)
    if receivers == "logits":
        if position != "END":
            raise ValueError("the logits are read at END: use position='END' for receivers='logits'")
        rec_heads: list[Head] = []
        rec_layers = [n_layers]
    else:
        rec_heads = [tuple(h) for h in receivers]
        if not rec_heads or not set(inputs) <= set("qkv"):
            raise ValueError("receivers must be 'logits' or a non-empty list of heads; "
                             "receiver_input a combination of 'q', 'k', 'v'")
        rec_layers = sorted({l for l, _ in rec_heads})
    last = max(rec_layers)
    pos = hooks.positions(orig, position)
    metric_clean = metric or default_metric(orig)
    clean = _value(metric_clean, caches.orig.end_logits)
    corrupted = _value(metric_clean, caches.new.end_logits)

    patched = torch.full((len(groups),), clean)
    # groups that can reach a receiver, bucketed by first sender layer (step C starts there)
    first_layer = [min(l for l, _ in g) for g in groups]
    buckets: dict[int, list[int]] = {}
    for i, l in enumerate(first_layer):
        if l < last:
            buckets.setdefault(l, []).append(i)
    width = 1 if receivers == "logits" else int((orig.pos["END"] - pos).max()) + 1
    chunks = [b[sl] for _, b in sorted(buckets.items())
              for sl in _chunks(len(b), len(orig) * width, max_tokens)]
    # per-head writes of (x_new - x_orig) at the receiver position, [n, head, d]
    head_delta = {}
    for idx in progress_bar(chunks, progress, desc="path patching"):
        chunk = [groups[i] for i in idx]
        start = min(min(l for l, _ in g) for g in chunk)
        for l in range(start, last):
            if l not in head_delta:
                dz = gather(caches.new.z[l], pos) - gather(caches.orig.z[l], pos)
                head_delta[l] = einops.einsum(dz, model.blocks[l].attn.W_O, "n h e, h e d -> n h d")
        member = torch.zeros(len(chunk), n_layers, n_heads)
        for g, heads in enumerate(chunk):
            for l, h in heads:
                member[g, l, h] = 1.0
        member = member.to(caches.orig.resid_pre[0].device)
        recorded = _step_c(model, caches.orig, pos, head_delta, member, start, rec_layers)
        if receivers == "logits":
            vals = _end_metric_values(model, orig, recorded[n_layers], metric)
        else:
            vals = _step_d(model, caches.orig, pos, recorded, rec_heads, inputs, metric)
        patched[idx] = vals.float()
    patched = patched.reshape(n_layers, n_heads) if all_heads else patched
    desc = "logits" if receivers == "logits" else (
        f"{''.join(inputs)} of {', '.join(f'{l}.{h}' for l, h in rec_heads)} at {position}")
    return PathPatchingResult(patched=patched, clean=clean, corrupted=corrupted,
                              senders=groups, receivers=desc)


def _step_c(model, orig: RunCache, pos: Tensor, head_delta: dict[int, Tensor], member: Tensor,
            start: int, rec_layers: list[int]) -> dict[int, Float[Tensor, "g n d"]]:
    """Step (C) at the receiver position only: residual stream entering each receiver layer
    (``n_layers`` = the final residual stream) with every head frozen to x_orig except the
    senders (x_new), MLPs and LayerNorms recomputed. Attention is never recomputed: frozen
    heads move nothing new between positions."""
    g = member.shape[0]
    first = min(start, min(rec_layers))
    r = gather(orig.resid_pre[first], pos).expand(g, -1, -1)
    out = {}
    for l in range(first, max(rec_layers)):
        if l in rec_layers:
            out[l] = r
        attn = gather(orig.resid_mid[l], pos) - gather(orig.resid_pre[l], pos)
        r = r + attn
        if l in head_delta and member[:, l].any():
            r = r + einops.einsum(member[:, l], head_delta[l], "g h, n h d -> g n d")
        r = r + _mlp(model, l, r[:, :, None])[:, :, 0]
    out[max(rec_layers)] = r
    return out


def _step_d(model, orig: RunCache, pos: Tensor, recorded: dict[int, Tensor],
            rec_heads: list[Head], inputs: tuple[str, ...], metric: Metric | None) -> Tensor:
    """Step (D): x_orig with the receivers' q/k/v at ``pos`` set from step (C)'s residual
    streams, everything downstream recomputed (window engine from the first receiver layer)."""
    values: dict[tuple[int, str], list[tuple[int, Tensor]]] = {}
    for l, h in rec_heads:
        x = _ln(model.blocks[l].ln1, recorded[l])  # [g, n, d]
        for c in inputs:
            W, b = _qkv_weights(model, c, l)
            values.setdefault((l, c), []).append((h, x @ W[h] + b[h]))

    def edit(layer, stage, t, groups):
        if (layer, stage) in values:
            t = t.clone()
            for h, v in values[(layer, stage)]:
                t[:, :, 0, h] = v[groups]
        return t

    n_groups = next(iter(recorded.values())).shape[0]
    final = _window_forward(model, orig, min(l for l, _ in rec_heads), pos,
                            slice(0, n_groups), edit)
    return _end_metric_values(model, orig.ds, final, metric)
