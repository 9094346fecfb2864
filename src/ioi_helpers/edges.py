"""Edge-level circuits for chapter 9: the edge graph, edge patching and edge-scoring methods.

**The graph** is the one of ACDC (Conmy et al. 2023) and of the MIB circuit track / EAP-IG
(Hanna et al. 2024; Mueller et al. 2025) for a GPT-2-style model (attention then MLP in each
block). Senders (nodes whose output is written to the residual stream), in forward order:
``input`` (the embedding, token + position), then per layer ``a{l}.h{h}`` (a head's output
``z W_O``, without ``b_O``) and ``m{l}`` (the MLP's output). Receivers (nodes that read the
residual stream): per layer the q, k and v inputs of every head (``a{l}.h{h}<q>`` ...), the
MLP's input ``m{l}``, and ``logits`` (the final residual stream). A sender feeds a receiver when
it is upstream of it:

* a head of layer l (each of q, k, v) reads ``input``, every head and every MLP of layers < l;
* the MLP of layer l reads ``input``, every head of layers <= l (its own layer's heads
  included: attention runs before the MLP) and every MLP of layers < l;
* the logits read every sender.

MIB's convention (``Graph.from_model`` in ``hannamw/EAP-IG``, ``src/eap/graph.py``, for a
non-parallel model): MLPs are nodes, a layer's MLP receives from its own layer's heads, q/k/v
count as three edges, the input node sends to everything. With ``L`` layers of ``H`` heads that
is :func:`count_edges` =

    3H * sum_l (1 + l(H+1))  +  sum_l (1 + l(H+1) + H)  +  (1 + L(H+1))

edges: 32,491 for GPT-2 small (12 x 12), the number of edges in MIB's own GPT-2 IOI circuit
file (``circuits/ioi-eap-ig.json`` in ``hannamw/MIB-circuit-track``), and 1,997 for an
8 x 4 model such as ``ioi-planted``.

**Edge patching** (:func:`patched_logit_diffs`): the model runs on p_IOI with only the edges in
``keep`` intact. Every other edge carries its sender's p_ABC output instead: each receiver's
input becomes its input in this (patched) run plus, for each removed edge into it,
``sender's p_ABC output - sender's output in this run``, at every position. This is MIB's
``evaluate_graph`` with ``intervention="patching"`` (the "clean" activations it subtracts are
those of the patched run itself, so that a kept edge carries what its sender computes from its
own, possibly patched, inputs). One corrupted forward caches the senders' p_ABC outputs; one
forward with hooks then evaluates a whole edge set: at each receiver's hook point the
correction is one ``einsum`` of the senders' differences with the column of removed edges.

**Scores** (one per edge, a ``[sender, receiver]`` tensor, 0 off the graph's edges; the mean over
prompts of a sum over positions; the metric is the logit difference on p_IOI):

* :func:`eap_scores`: ``(a_ABC[sender] - a_IOI[sender]) . d metric / d input[receiver]``, the
  first-order estimate of the change of the metric when that edge alone is patched;
* :func:`eap_ig_scores`: the same with the gradient averaged over ``steps`` points
  ``alpha = 1/steps, 2/steps, ..., 1`` on the straight line from the p_ABC token embeddings
  (alpha = 0) to the p_IOI ones (alpha = 1), the rest of the model running freely from the
  interpolated embeddings (MIB's "EAP-IG-inputs"; a right Riemann sum, as EAP-IG's
  ``get_scores_eap_ig``). With ``steps=1`` the only point is alpha = 1, the p_IOI run: EAP-IG
  then *is* EAP;
* :func:`random_scores`: a seeded baseline;
* :func:`head_scores`: node scores promoted from edges (a head's q, k, v receivers and its
  output are one node).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from . import hooks, metrics
from .autodiscovery import _split_inputs
from .dataset import IOIDataset

LOGITS = "logits"
INPUT = "input"


# ----------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class EdgeGraph:
    """The edge graph of a model shape (see the module docstring).

    ``senders``: ``input``, then per layer ``a{l}.h{h}`` for each head and ``m{l}``.
    ``receivers``: per layer ``a{l}.h{h}<q>`` for each head, then ``<k>``, ``<v>``, then
    ``m{l}``; last ``logits``. ``mask[s, r]``: whether sender s feeds receiver r (an edge).
    ``upstream[r]``: the number of senders that can feed receiver r; they are always the first
    ``upstream[r]`` senders (the forward order).
    """

    n_layers: int
    n_heads: int
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    mask: Bool[Tensor, "sender receiver"]
    upstream: tuple[int, ...]

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    def edge_names(self) -> list[str]:
        """MIB's edge names ``parent->child`` (``parent->a{l}.h{h}<q>`` for a head's input),
        in the order of ``mask.nonzero()`` (sender-major)."""
        return [_edge_name(self.senders[s], self.receivers[r]) for s, r in self.mask.nonzero().tolist()]


def _edge_name(sender: str, receiver: str) -> str:
    if receiver.endswith(">"):
        node, qkv = receiver[:-3], receiver[-2]
        return f"{sender}->{node}<{qkv}>"
    return f"{sender}->{receiver}"


def sender_index(n_heads: int, node: str) -> int:
    """Index of a sender node (``input``, ``a{l}.h{h}``, ``m{l}``) in :attr:`EdgeGraph.senders`."""
    if node == INPUT:
        return 0
    if node.startswith("m"):
        return 1 + int(node[1:]) * (n_heads + 1) + n_heads
    layer, head = node[1:].split(".h")
    return 1 + int(layer) * (n_heads + 1) + int(head)


def receiver_index(n_layers: int, n_heads: int, node: str) -> int:
    """Index of a receiver (``a{l}.h{h}<q|k|v>``, ``m{l}``, ``logits``) in :attr:`EdgeGraph.receivers`."""
    if node == LOGITS:
        return n_layers * (3 * n_heads + 1)
    if node.startswith("m"):
        return int(node[1:]) * (3 * n_heads + 1) + 3 * n_heads
    head_part, qkv = node[:-3], node[-2]
    layer, head = head_part[1:].split(".h")
    return int(layer) * (3 * n_heads + 1) + "qkv".index(qkv) * n_heads + int(head)


@lru_cache(maxsize=None)
def edge_graph(n_layers: int, n_heads: int) -> EdgeGraph:
    """The edge graph of a GPT-2-style model with ``n_layers`` layers of ``n_heads`` heads.

    Args:
        n_layers: number of transformer blocks.
        n_heads: attention heads per block.

    Returns:
        The :class:`EdgeGraph` (cached: treat it as read-only).
    """
    senders = [INPUT]
    receivers: list[str] = []
    upstream: list[int] = []
    for l in range(n_layers):
        before_layer = len(senders)  # input, heads and MLPs of layers < l
        for qkv in "qkv":
            for h in range(n_heads):
                receivers.append(f"a{l}.h{h}<{qkv}>")
                upstream.append(before_layer)
        senders += [f"a{l}.h{h}" for h in range(n_heads)]
        receivers.append(f"m{l}")
        upstream.append(len(senders))  # ... and this layer's heads
        senders.append(f"m{l}")
    receivers.append(LOGITS)
    upstream.append(len(senders))
    mask = torch.arange(len(senders))[:, None] < torch.tensor(upstream)[None, :]
    return EdgeGraph(n_layers, n_heads, tuple(senders), tuple(receivers), mask, tuple(upstream))


def graph_of(model) -> EdgeGraph:
    """:func:`edge_graph` for a model's shape."""
    return edge_graph(model.cfg.n_layers, model.cfg.n_heads)


def count_edges(n_layers: int, n_heads: int) -> int:
    """The number of edges of :func:`edge_graph`, in closed form (see the module docstring).

    Args:
        n_layers: number of layers L.
        n_heads: heads per layer H.

    Returns:
        ``3H * (L + (H+1) L(L-1)/2) + L(H+1) + (H+1) L(L-1)/2 + 1 + L(H+1)``.
    """
    L, H = n_layers, n_heads
    pairs = L * (L - 1) // 2  # sum of l over layers
    to_heads = 3 * H * (L + (H + 1) * pairs)
    to_mlps = L * (1 + H) + (H + 1) * pairs
    to_logits = 1 + L * (H + 1)
    return to_heads + to_mlps + to_logits


def edge_table(graph: EdgeGraph, scores: Float[Tensor, "sender receiver"]) -> pd.DataFrame:
    """One row per edge: ``sender``, ``receiver`` (node names without ``<q>``), ``input``
    (``q``, ``k``, ``v``, ``mlp`` or ``logits``), ``name`` (MIB's edge name) and ``score``."""
    rows = []
    for s, r in graph.mask.nonzero().tolist():
        snd, rcv = graph.senders[s], graph.receivers[r]
        if rcv.endswith(">"):
            node, inp = rcv[:-3], rcv[-2]
        else:
            node, inp = rcv, ("logits" if rcv == LOGITS else "mlp")
        rows.append((snd, node, inp, _edge_name(snd, rcv), float(scores[s, r])))
    return pd.DataFrame(rows, columns=["sender", "receiver", "input", "name", "score"])


# ----------------------------------------------------------------------------- activations


def _check_pair(ioi: IOIDataset, abc: IOIDataset) -> None:
    if len(ioi) != len(abc) or not torch.equal(ioi.lengths, abc.lengths):
        raise ValueError("p_IOI and p_ABC must be matched prompt by prompt, with equal token lengths")


def _names(L: int) -> list[str]:
    return (["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_z" for l in range(L)]
            + [f"blocks.{l}.hook_mlp_out" for l in range(L)])


def sender_activations(model, ds: IOIDataset) -> dict[str, Tensor]:
    """The senders' outputs on ``ds`` in compact form (one forward that stops after the last
    MLP): ``blocks.0.hook_resid_pre`` (the input node), ``blocks.{l}.attn.hook_z`` (a head's
    output is ``z[:, :, h] @ W_O[h]``) and ``blocks.{l}.hook_mlp_out``, each ``[batch, seq, ...]``.

    Args:
        model: the (bridge) model.
        ds: the prompts.

    Returns:
        {hook name: activation}, on the model's device.
    """
    return hooks.cache_activations(model, ds.tokens, _names(model.cfg.n_layers))


def _head_out(model, layer: int, z: Float[Tensor, "b p h e"]) -> Float[Tensor, "b p h d"]:
    return torch.einsum("bphe,hed->bphd", z, model.blocks[layer].attn.W_O)


# ----------------------------------------------------------------------------- edge patching


def _batches(n: int, batch_size: int | None):
    step = n if not batch_size else batch_size
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def patched_logit_diffs(model, ioi: IOIDataset, abc: IOIDataset,
                        keep: Bool[Tensor, "*set sender receiver"],
                        corrupted: dict[str, Tensor] | None = None,
                        batch_size: int | None = None) -> Float[Tensor, "*set batch"]:
    """Per-prompt logit difference of the model on p_IOI with only the edges in ``keep`` intact,
    every other edge patched with its sender's p_ABC output at all positions (module docstring).

    One forward with hooks per batch, whatever the edge set. A stack of ``K`` edge sets
    (``keep`` of shape ``[K, n_senders, n_receivers]``) runs as one batch of ``K x len(ioi)``
    prompts (each copy of the prompts with its own edge set): many small edge sets (one edge
    removed at a time, an ACDC receiver's incoming edges) cost few forwards.

    Args:
        model: the (bridge) model.
        ioi: p_IOI, the prompts run and scored (logit(IO) - logit(S) at END).
        abc: p_ABC, matched to ``ioi`` prompt by prompt (same token lengths).
        keep: ``[n_senders, n_receivers]`` booleans, or a stack ``[K, n_senders, n_receivers]``
            of edge sets; entries off the graph's edges are ignored.
        corrupted: :func:`sender_activations` of ``abc`` (computed here when None; pass it to
            evaluate several edge sets with one corrupted forward).
        batch_size: prompts per forward (None: all at once; with a stack, prompt copies).

    Returns:
        ``[len(ioi)]`` logit differences (``[K, len(ioi)]`` for a stack), float32 on the CPU.
    """
    _check_pair(ioi, abc)
    graph = graph_of(model)
    L, H = graph.n_layers, graph.n_heads
    corrupted = corrupted if corrupted is not None else sender_activations(model, abc)
    dev = model.cfg.device
    dtype = corrupted["blocks.0.hook_resid_pre"].dtype
    keep = keep.to(torch.bool).cpu()
    if keep.dim() not in (2, 3) or tuple(keep.shape[-2:]) != tuple(graph.mask.shape):
        raise ValueError(f"keep must be [{len(graph.senders)}, {len(graph.receivers)}] or a stack "
                         f"[K, {len(graph.senders)}, {len(graph.receivers)}], got {tuple(keep.shape)}")
    stacked = keep.dim() == 3
    n_sets = keep.shape[0] if stacked else 1
    removed_all = (graph.mask & ~keep).to(dev, dtype)  # [S, R] or [K, S, R]
    if stacked:  # copy k of the prompts runs edge set k
        copies = [i for _ in range(n_sets) for i in range(len(ioi))]
        set_of = torch.arange(n_sets).repeat_interleave(len(ioi))
        ioi = ioi[copies]
        corrupted = {k: v[torch.tensor(copies, device=v.device)] for k, v in corrupted.items()}
    out = []
    for part in _batches(len(ioi), batch_size):
        ds = ioi[part]
        p = ds.tokens.shape[1]
        corr = {k: v[part, :p] for k, v in corrupted.items()}
        removed = removed_all[set_of[part].to(dev)] if stacked else removed_all  # [b, S, R] / [S, R]
        # (p_ABC - this run) output of each sender so far, in forward order: [S, b, p, d], so that
        # the first n_up senders of a receiver are one contiguous slice (no copy per receiver)
        buf = torch.empty((len(graph.senders), len(ds), p, model.cfg.d_model), device=dev, dtype=dtype)
        filled = [0]

        def push(d: Tensor) -> None:
            buf[filled[0]:filled[0] + d.shape[0]] = d
            filled[0] += d.shape[0]

        def correction(r0: int, r1: int) -> Tensor | None:
            """sum over removed edges into receivers r0:r1 of (p_ABC - current) sender output,
            ``[b, p, r1 - r0, d]`` (None when no edge into them is removed)."""
            n_up = graph.upstream[r0]
            assert filled[0] == n_up, (filled[0], n_up)
            cols = removed[..., :n_up, r0:r1]
            if not bool(cols.any()):
                return None
            if stacked:
                return torch.einsum("sbpd,bsr->bprd", buf[:n_up], cols)
            # one matrix product [r, s] x [s, b*p*d] over the senders (buf is sender-major),
            # then [r, b, p, d] -> [b, p, r, d]; no copy of the senders' buffer
            out = cols.T @ buf[:n_up].view(n_up, -1)
            return out.view(r1 - r0, *buf.shape[1:]).permute(1, 2, 0, 3)

        qkv_upd: dict[int, Tensor | None] = {}

        def input_hook(x, hook):
            push((corr["blocks.0.hook_resid_pre"] - x)[None])
            return x

        def qkv_hook(x, hook, l, c):
            # q, k and v of layer l read the same senders: their corrections are one product,
            # made at q (the first of the three hooks) and sliced at each
            r0 = l * (3 * H + 1)
            if c == "q":
                qkv_upd[l] = correction(r0, r0 + 3 * H)
            upd = qkv_upd[l]
            if c == "v":
                del qkv_upd[l]
            if upd is None:
                return x
            i = "qkv".index(c) * H
            return x + upd[:, :, i:i + H]

        def z_hook(z, hook, l):
            push(torch.einsum("bphe,hed->hbpd", corr[f"blocks.{l}.attn.hook_z"] - z, model.blocks[l].attn.W_O))
            return z

        def mlp_in_hook(x, hook, l):
            r0 = l * (3 * H + 1) + 3 * H
            upd = correction(r0, r0 + 1)
            return x if upd is None else x + upd[:, :, 0]

        def mlp_out_hook(x, hook, l):
            push((corr[f"blocks.{l}.hook_mlp_out"] - x)[None])
            return x

        def logits_hook(x, hook):
            r0 = len(graph.receivers) - 1
            upd = correction(r0, r0 + 1)
            return x if upd is None else x + upd[:, :, 0]

        fwd = [("blocks.0.hook_resid_pre", input_hook)]
        for l in range(L):
            fwd += [(f"blocks.{l}.attn.hook_{c}_input",
                     lambda x, hook, l=l, c=c: qkv_hook(x, hook, l, c)) for c in "qkv"]
            fwd += [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: z_hook(z, hook, l)),
                    (f"blocks.{l}.hook_mlp_in", lambda x, hook, l=l: mlp_in_hook(x, hook, l)),
                    (f"blocks.{l}.hook_mlp_out", lambda x, hook, l=l: mlp_out_hook(x, hook, l))]
        fwd.append((f"blocks.{L - 1}.hook_resid_post", logits_hook))
        with _split_inputs(model):
            end_logits, _ = hooks.run(model, ds.tokens, ds.pos["END"], fwd_hooks=fwd)
        out.append(metrics.logit_diff(end_logits, ds).float().cpu())
    out = torch.cat(out)
    return out.view(n_sets, -1) if stacked else out


def edge_patch(model, ioi: IOIDataset, abc: IOIDataset, keep: Bool[Tensor, "sender receiver"],
               corrupted: dict[str, Tensor] | None = None, batch_size: int | None = None) -> float:
    """Mean logit difference with only the edges in ``keep`` intact (:func:`patched_logit_diffs`).

    Args:
        model, ioi, abc, keep, corrupted, batch_size: as in :func:`patched_logit_diffs`.

    Returns:
        The mean over prompts.
    """
    return patched_logit_diffs(model, ioi, abc, keep, corrupted, batch_size).mean().item()


# ----------------------------------------------------------------------------- scores


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def _scores(model, ioi: IOIDataset, abc: IOIDataset, steps: int, batch_size: int | None,
            per_prompt: bool) -> Tensor:
    """Shared body of EAP / EAP-IG: sum over alpha = k/steps (k = 1..steps) of
    (p_ABC - p_IOI sender output) . grad of the summed logit diff w.r.t. the receiver input,
    the token embeddings set to p_ABC + alpha (p_IOI - p_ABC)."""
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    _check_pair(ioi, abc)
    graph = graph_of(model)
    L, H = graph.n_layers, graph.n_heads
    dev = model.cfg.device
    names = _names(L) + ["hook_embed"]
    clean_all = hooks.cache_activations(model, ioi.tokens, names)
    corr_all = hooks.cache_activations(model, abc.tokens, names)
    S, R = graph.mask.shape
    total = torch.zeros((len(ioi) if per_prompt else 1), S, R, dtype=torch.float64)
    eq = "bpsd,bprd->bsr" if per_prompt else "bpsd,bprd->sr"
    start = 0
    for part in _batches(len(ioi), batch_size):
        ds = ioi[part]
        p = ds.tokens.shape[1]
        clean = {k: v[part, :p] for k, v in clean_all.items()}
        corr = {k: v[part, :p] for k, v in corr_all.items()}
        # sender output differences p_ABC - p_IOI, [b, p, S, d] in sender order
        blocks = [(corr["blocks.0.hook_resid_pre"] - clean["blocks.0.hook_resid_pre"])[:, :, None]]
        for l in range(L):
            zname, mname = f"blocks.{l}.attn.hook_z", f"blocks.{l}.hook_mlp_out"
            blocks.append(_head_out(model, l, corr[zname] - clean[zname]))
            blocks.append((corr[mname] - clean[mname])[:, :, None])
        delta = torch.cat(blocks, 2)
        rows = torch.arange(len(ds), device=dev)
        end, io, s = ds.pos["END"].to(dev), ds.io_tokens.to(dev), ds.s_tokens.to(dev)
        for k in range(1, steps + 1):
            alpha = k / steps
            emb = corr["hook_embed"] + alpha * (clean["hook_embed"] - corr["hook_embed"])
            captured: list[Tensor] = []

            def embed_hook(x, hook, emb=emb):
                return emb.detach().clone().requires_grad_(True)

            def capture(x, hook):  # a new tensor: returning x itself gave wrong gradients at
                y = x.clone()      # hook_mlp_in on the bridge (test_edges' finite differences)
                captured.append(y)
                return y

            def stop(x, hook):
                raise StopAtLayerException(x)

            fwd = [("hook_embed", embed_hook)]
            for l in range(L):
                fwd += [(f"blocks.{l}.attn.hook_{c}_input", capture) for c in "qkv"]
                fwd.append((f"blocks.{l}.hook_mlp_in", capture))
            fwd += [(f"blocks.{L - 1}.hook_resid_post", capture), ("ln_final.hook_in", stop)]
            with _split_inputs(model), torch.enable_grad():
                resid = model.run_with_hooks(ds.tokens.to(dev), fwd_hooks=fwd)
                lg = hooks.end_logits_from_resid(model, resid, end)
                metric = (lg[rows, io] - lg[rows, s]).sum()
                grads = torch.autograd.grad(metric, captured)
            # captured: per layer q, k, v [b, p, H, d] and mlp_in [b, p, d]; then the logits
            with torch.no_grad():
                for l in range(L):
                    g = torch.cat([grads[4 * l], grads[4 * l + 1], grads[4 * l + 2],
                                   grads[4 * l + 3][:, :, None]], 2)  # [b, p, 3H + 1, d]
                    r0 = l * (3 * H + 1)
                    n_heads_up = graph.upstream[r0]
                    n_mlp_up = graph.upstream[r0 + 3 * H]
                    part_scores = torch.einsum(eq, delta[:, :, :n_heads_up], g[:, :, :3 * H]).double().cpu()
                    target = total[start:start + len(ds)] if per_prompt else total[0]
                    target[..., :n_heads_up, r0:r0 + 3 * H] += part_scores
                    target[..., :n_mlp_up, r0 + 3 * H] += torch.einsum(
                        eq, delta[:, :, :n_mlp_up], g[:, :, 3 * H:]).double().cpu()[..., 0]
                    del part_scores
                g = grads[-1][:, :, None]
                target = total[start:start + len(ds)] if per_prompt else total[0]
                target[..., :, R - 1] += torch.einsum(eq, delta, g).double().cpu()[..., 0]
        start += len(ds)
    total = total / steps
    total = total if per_prompt else total[0] / len(ioi)
    return (total * graph.mask).float()


def eap_scores(model, ioi: IOIDataset, abc: IOIDataset, batch_size: int | None = None,
               per_prompt: bool = False) -> Float[Tensor, "sender receiver"]:
    """Edge attribution patching (Syed et al. 2023, as in MIB): per edge,
    ``(a_ABC[sender] - a_IOI[sender]) . d logit_diff / d input[receiver]`` at p_IOI, summed over
    positions, averaged over prompts.

    Args:
        model: the (bridge) model.
        ioi: p_IOI (the run where the gradient is taken, and the metric's answers).
        abc: p_ABC, matched to ``ioi``.
        batch_size: prompts per forward/backward (None: all at once).
        per_prompt: return ``[n_prompts, sender, receiver]`` (each prompt's sum over positions)
            instead of the mean, e.g. for :func:`ioi_helpers.faithfulness.bootstrap_ci`.

    Returns:
        ``[n_senders, n_receivers]`` scores (0 off the graph's edges), in logit-diff units.
    """
    return _scores(model, ioi, abc, 1, batch_size, per_prompt)


def eap_ig_scores(model, ioi: IOIDataset, abc: IOIDataset, steps: int = 5,
                  batch_size: int | None = None, per_prompt: bool = False
                  ) -> Float[Tensor, "sender receiver"]:
    """EAP with integrated gradients on the inputs (Hanna et al. 2024; MIB's "EAP-IG-inputs").

    Per edge, ``(a_ABC[sender] - a_IOI[sender]) . mean_k grad_k`` where ``grad_k`` is the
    gradient of the logit difference w.r.t. the receiver's input when the token embeddings are
    ``e_ABC + (k / steps) (e_IOI - e_ABC)``, k = 1..steps (a right Riemann sum of the path
    integral from p_ABC to p_IOI; the sender differences are those of the two real runs).
    ``steps=1`` is :func:`eap_scores` exactly. MIB's circuit track runs it with 5 steps
    (``--ig-steps`` default of its ``run_attribution.py``).

    Args:
        model, ioi, abc, batch_size, per_prompt: as in :func:`eap_scores`.
        steps: number of interpolation points, >= 1 (cost: ``steps`` forward+backward passes).

    Returns:
        ``[n_senders, n_receivers]`` scores (0 off the graph's edges).
    """
    _check_steps(steps)
    return _scores(model, ioi, abc, steps, batch_size, per_prompt)


def random_scores(graph: EdgeGraph, seed: int = 0) -> Float[Tensor, "sender receiver"]:
    """A random ranking (the baseline every method should beat): independent standard normal
    scores on the graph's edges, seeded.

    Args:
        graph: the edge graph.
        seed: seed of the generator.

    Returns:
        ``[n_senders, n_receivers]`` scores, 0 off the graph's edges.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(graph.mask.shape, generator=gen) * graph.mask


def head_scores(graph: EdgeGraph, scores: Float[Tensor, "*batch sender receiver"],
                how: Literal["max", "sum"] = "max") -> Float[Tensor, "*batch layer head"]:
    """Node scores promoted from edge scores, for the heads (for a ROC against a head-level
    reference, :mod:`ioi_helpers.roc`).

    A head is one node: its three receivers (q, k, v) and its output. Its score is the ``max``
    (default) or the ``sum`` of ``|score|`` over every edge that touches it: edges into its q, k
    or v input and edges out of its output.

    Args:
        graph: the edge graph.
        scores: ``[n_senders, n_receivers]`` edge scores, or a batch of them
            ``[..., n_senders, n_receivers]`` (e.g. bootstrap resamples), scored at once.
        how: ``"max"`` or ``"sum"``.

    Returns:
        ``[n_layers, n_heads]`` scores (``[..., n_layers, n_heads]`` for a batch), >= 0.
    """
    if how not in ("max", "sum"):
        raise ValueError(f"how must be 'max' or 'sum', got {how!r}")
    L, H = graph.n_layers, graph.n_heads
    a = scores.abs() * graph.mask
    senders, receivers = _head_nodes(L, H)
    # per head: its 3 receivers' columns (sender-major, as a[:, [q, k, v]].flatten()) and
    # its sender's row
    incoming = a[..., :, receivers].movedim(-3, -2)  # [..., L*H, S, 3]
    incoming = incoming.reshape(*a.shape[:-2], L * H, -1)  # [..., L*H, S*3]
    outgoing = a[..., senders, :]  # [..., L*H, R]
    if how == "max":
        out = torch.maximum(incoming.amax(-1), outgoing.amax(-1))
    else:
        out = incoming.sum(-1) + outgoing.sum(-1)
    return out.reshape(*a.shape[:-2], L, H)


@lru_cache(maxsize=None)
def _head_nodes(n_layers: int, n_heads: int) -> tuple[Tensor, Tensor]:
    """Per head (layer-major): its sender index ``[L*H]`` and its q, k, v receiver indices
    ``[L*H, 3]``."""
    L, H = n_layers, n_heads
    names = [f"a{l}.h{h}" for l in range(L) for h in range(H)]
    senders = torch.tensor([sender_index(H, n) for n in names])
    receivers = torch.tensor([[receiver_index(L, H, f"{n}<{c}>") for c in "qkv"] for n in names])
    return senders, receivers


def top_edges(graph: EdgeGraph, scores: Float[Tensor, "sender receiver"], n: int,
              absolute: bool = True) -> Bool[Tensor, "sender receiver"]:
    """The ``n`` highest-scored edges as a ``keep`` mask (ties broken by edge order, sender-major).

    Args:
        graph: the edge graph.
        scores: ``[n_senders, n_receivers]`` edge scores.
        n: number of edges to keep, 0..``graph.n_edges``.
        absolute: rank by ``|score|`` (True) or by the signed score.

    Returns:
        ``[n_senders, n_receivers]`` booleans with exactly ``n`` edges set.
    """
    if not 0 <= n <= graph.n_edges:
        raise ValueError(f"n must be in [0, {graph.n_edges}], got {n}")
    idx = graph.mask.flatten().nonzero()[:, 0]
    vals = scores.flatten()[idx].double()
    vals = vals.abs() if absolute else vals
    order = torch.sort(-vals, stable=True).indices[:n]
    keep = torch.zeros(graph.mask.numel(), dtype=torch.bool)
    keep[idx[order]] = True
    return keep.view(graph.mask.shape)


def disjoint_halves(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Two disjoint random halves of ``range(n)`` (seeded), e.g. to score edges twice and
    compare the rankings with :func:`ioi_helpers.faithfulness.topk_jaccard`."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[: n // 2]), sorted(perm[n // 2:])
