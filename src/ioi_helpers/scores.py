"""Per-head scores used to characterise the circuit's classes.

* :func:`copy_scores` - the copy score (and negative copy score) of Name Movers (Sec. 3.1).
* :func:`name_attention` - attention from END to IO, S1 and S2, per head.
* :func:`repeated_token_scores` - induction, duplicate-token and previous-token scores on
  repeated random tokens (:func:`pattern_scores` computes them from any attention pattern).
* :func:`attention_projection` / :func:`attention_projection_correlation` - attention to a
  name vs the head's output projected on that name's unembedding (Sec. 3.1, Fig. 3).

All ``[layer, head]`` results hold NaN for heads that were not asked for.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .dataset import IOIDataset
from .hooks import Head, cache_activations, gather, hook_name, positions, progress_bar


def _heads(model, heads: Iterable[Head] | None) -> list[Head]:
    if heads is None:
        return [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    return [tuple(h) for h in heads]


def _batches(ds: IOIDataset, batch_size: int):
    for start in range(0, len(ds), batch_size):
        yield ds[start:start + batch_size]


# ----------------------------------------------------------------------------- copy score


def copy_scores(model, ds: IOIDataset, heads: Iterable[Head] | None = None, k: int = 5,
                negative: bool = False, names: Sequence[str] = ("IO", "S1", "S2"),
                batch_size: int = 256, progress: bool | None = None) -> Float[Tensor, "layer head"]:
    """Fraction of names a head's OV circuit copies (Sec. 3.1).

    For each prompt and each name position in ``names`` (IO, S1, S2): take the residual
    stream at that position after the first MLP (``blocks.0.hook_resid_post``: embeddings,
    attention 0 and MLP 0), apply the head's OV circuit (its layer's ``ln1`` normalisation,
    ``W_V``, ``b_V``, ``W_O``; not the layer bias ``b_O``), then the final LayerNorm and the
    unembedding; a hit is the name's own token among the top ``k`` logits. ``negative=True``
    uses -OV (the negative copy score of the Negative Name Movers). This is the authors'
    construction; the processed (LN-folded) weights of compatibility mode give the same
    numbers as raw GPT-2 weights with explicit LayerNorms. :func:`copy_score_pair` computes
    both signs at the cost of one.
    """
    return copy_score_pair(model, ds, heads, k, names, batch_size, progress)[
        "negative" if negative else "copy"]


def _resid_after_block0(model, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq d_model"]:
    """``blocks.0.hook_resid_post``, from a forward pass stopped right there."""
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    store = {}

    def stop(x, hook):
        store["x"] = x.detach()
        raise StopAtLayerException(x)

    with torch.no_grad():
        model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[("blocks.0.hook_resid_post", stop)])
    return store["x"]


def _final_ln_is_plain(model) -> bool:
    """True when ``ln_final`` only normalises (no gain or bias: compatibility mode folds them
    into the unembedding), checked on random vectors."""
    x = torch.randn(4, 1, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    x = x.to(model.cfg.device) * 3
    xc = x - x.mean(-1, keepdim=True)
    ref = xc / (xc.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    return torch.allclose(model.ln_final(x), ref, atol=1e-5, rtol=1e-4)


def copy_score_pair(model, ds: IOIDataset, heads: Iterable[Head] | None = None, k: int = 5,
                    names: Sequence[str] = ("IO", "S1", "S2"), batch_size: int = 256,
                    progress: bool | None = None) -> dict[str, Float[Tensor, "layer head"]]:
    """:func:`copy_scores` of OV (``"copy"``) and of -OV (``"negative"``), per head.

    The forward pass stops after block 0. When the final LayerNorm has no gain or bias (the
    processed weights of compatibility mode), a head's logits are computed in its own
    ``d_head`` space: with ``v`` the value vector and ``W_O`` centred (LayerNorm's centring),
    ``LN(v W_O) = v W_O / sigma``, so the logits are ``(v / sigma) (W_O W_U) + b_U`` and those
    of -OV are ``-(v / sigma) (W_O W_U) + b_U``: one ``[d_head, vocab]`` product per head
    instead of unembedding every output twice. Otherwise each output goes through
    ``ln_final`` and the unembedding.
    """
    heads = _heads(model, heads)
    resid, targets = [], []
    for part in _batches(ds, batch_size):
        r = _resid_after_block0(model, part.tokens)
        for name in names:
            pos = positions(part, name)
            resid.append(gather(r, pos))
            targets.append(gather(part.tokens.to(r.device), pos))
    resid, targets = torch.cat(resid), torch.cat(targets)
    out = {key: torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
           for key in ("copy", "negative")}
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)
    plain = _final_ln_is_plain(model)
    W_V, b_V, W_O, W_U, b_U = model.W_V, model.b_V, model.W_O, model.W_U, model.b_U
    step = max(1, batch_size // 2)

    def n_hits(logits, tgt):
        return (logits.topk(k, dim=-1).indices == tgt[:, None]).any(-1).sum().item()

    with torch.no_grad():
        for l, hs in progress_bar(sorted(by_layer.items()), progress, desc="copy scores"):
            x = model.blocks[l].ln1(resid[:, None])[:, 0]  # [m, d]
            v = torch.einsum("md,hde->mhe", x, W_V[l, hs]) + b_V[l, hs]  # [m, h, e]
            for j, h in enumerate(hs):
                hits = {"copy": 0, "negative": 0}
                if plain:  # [v / sigma, 1] @ [W_O W_U; b_U]: logits of +OV and -OV, bias included
                    w_o = W_O[l, h] - W_O[l, h].mean(-1, keepdim=True)  # [e, d], centred
                    sigma = ((v[:, j] @ w_o).pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
                    a = v[:, j] / sigma
                    w_ou = torch.cat([w_o @ W_U, b_U[None]])  # [e + 1, vocab]
                for start in range(0, len(x), step):
                    sl = slice(start, start + step)
                    tgt = targets[sl]
                    if plain:
                        one = torch.ones_like(a[sl, :1])
                        logits = torch.cat([torch.cat([a[sl], one], -1),
                                            torch.cat([-a[sl], one], -1)]) @ w_ou
                        hit = (logits.topk(k, dim=-1).indices == tgt.repeat(2)[:, None]).any(-1)
                        hits["copy"] += hit[:len(tgt)].sum().item()
                        hits["negative"] += hit[len(tgt):].sum().item()
                    else:
                        for key, sign in (("copy", 1.0), ("negative", -1.0)):
                            o = sign * (v[sl, j] @ W_O[l, h])
                            hits[key] += n_hits(model.unembed(model.ln_final(o[:, None]))[:, 0], tgt)
                for key in hits:
                    out[key][l, h] = hits[key] / len(x)
    return out


# ----------------------------------------------------------------------------- attention


def attention_at(pattern: Float[Tensor, "batch head query key"], query: Int[Tensor, "batch"],
                 key: Int[Tensor, "batch"]) -> Float[Tensor, "batch head"]:
    """``pattern[i, :, query[i], key[i]]`` for each prompt ``i``."""
    rows = torch.arange(pattern.shape[0], device=pattern.device)
    return pattern[rows, :, query.to(pattern.device), key.to(pattern.device)]


def name_attention(model, ds: IOIDataset, to: Sequence[str] = ("IO", "S1", "S2"),
                   from_: str = "END", batch_size: int = 100) -> dict[str, Float[Tensor, "layer head"]]:
    """Mean attention probability from ``from_`` to each position in ``to``, per head."""
    n_layers = model.cfg.n_layers
    names = [hook_name("pattern", l) for l in range(n_layers)]
    sums = {t: torch.zeros(n_layers, model.cfg.n_heads) for t in to}
    for part in _batches(ds, batch_size):
        store = cache_activations(model, part.tokens, names)
        q = positions(part, from_)
        for t in to:
            kpos = positions(part, t)
            for l in range(n_layers):
                sums[t][l] += attention_at(store[names[l]], q, kpos).sum(0).float().cpu()
    return {t: s / len(ds) for t, s in sums.items()}


def previous_token_attention(model, ds: IOIDataset, at: str = "S1+1", batch_size: int = 100,
                             ) -> dict[str, Float[Tensor, "layer head"]]:
    """Per head, from the query at ``at`` (per prompt): ``"previous"``, the mean attention to
    the position just before it; ``"max other"``, the mean over prompts of the largest
    attention to any other position before ``at`` (the first token included). A previous-token
    head has ``previous > max other``; the comparison means the same on ABBA and BABA prompts."""
    n_layers = model.cfg.n_layers
    names = [hook_name("pattern", l) for l in range(n_layers)]
    prev = torch.zeros(n_layers, model.cfg.n_heads)
    other = torch.zeros(n_layers, model.cfg.n_heads)
    for part in _batches(ds, batch_size):
        store = cache_activations(model, part.tokens, names)
        q = positions(part, at)
        if bool((q < 1).any()):
            raise ValueError(f"{at} must have a token before it")
        rows = torch.arange(len(part))
        for l in range(n_layers):
            pat = store[names[l]].float()
            qd = q.to(pat.device)
            row = pat[rows.to(pat.device), :, qd]  # [batch, head, key]
            prev[l] += row[rows.to(pat.device), :, qd - 1].sum(0).cpu()
            keys = torch.arange(row.shape[-1], device=pat.device)
            mask = (keys[None] < (qd - 1)[:, None])  # positions before the previous token
            masked = row.masked_fill(~mask[:, None, :], float("-inf"))
            other[l] += masked.max(-1).values.clamp(min=0).sum(0).cpu()
    return {"previous": prev / len(ds), "max other": other / len(ds)}


# ----------------------------------------------------------------------------- repeated tokens


def repeated_random_tokens(n_seq: int = 50, seq_len: int = 20, seed: int = 0,
                           vocab_size: int = 50257, prepend_bos: bool = False,
                           bos_token_id: int = 50256) -> Int[Tensor, "n_seq total"]:
    """``n_seq`` sequences of ``seq_len`` distinct random tokens, each repeated twice
    (``2 * seq_len`` tokens, plus a BOS in front if ``prepend_bos``). Token
    ``bos_token_id`` (GPT-2's ``<|endoftext|>``) is never drawn."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.tensor([t for t in range(vocab_size) if t != bos_token_id])
    rows = []
    for _ in range(n_seq):
        half = pool[torch.randperm(len(pool), generator=gen)[:seq_len]]
        row = torch.cat([half, half])
        if prepend_bos:
            row = torch.cat([torch.tensor([bos_token_id]), row])
        rows.append(row)
    return torch.stack(rows)


def pattern_scores(pattern: Float[Tensor, "batch head query key"], seq_len: int, offset: int = 0,
                   ) -> dict[str, Float[Tensor, "head"]]:
    """Induction, duplicate-token and previous-token scores from attention patterns on
    repeated sequences (:func:`repeated_random_tokens`; ``offset`` = 1 with a BOS).

    For every query position i of the second copy (``offset + seq_len <= i <
    offset + 2 * seq_len``), averaged over those positions and the batch:

    * induction: attention to ``i - seq_len + 1`` (the token after i's earlier occurrence);
    * duplicate: attention to ``i - seq_len`` (i's earlier occurrence);
    * previous: attention to ``i - 1``.
    """
    q = torch.arange(offset + seq_len, offset + 2 * seq_len, device=pattern.device)
    sub = pattern[:, :, q]  # [batch, head, n_q, key]

    def at(keys):
        return sub[:, :, torch.arange(len(q)), keys].mean(dim=(0, 2))

    return {"induction": at(q - seq_len + 1), "duplicate": at(q - seq_len), "previous": at(q - 1)}


def repeated_token_scores(model, n_seq: int = 50, seq_len: int = 20, seed: int = 0,
                          prepend_bos: bool = False, batch_size: int = 50,
                          ) -> dict[str, Float[Tensor, "layer head"]]:
    """:func:`pattern_scores` of every head on :func:`repeated_random_tokens`."""
    tokens = repeated_random_tokens(n_seq, seq_len, seed, model.cfg.d_vocab, prepend_bos)
    n_layers = model.cfg.n_layers
    names = [hook_name("pattern", l) for l in range(n_layers)]
    out = {k: torch.zeros(n_layers, model.cfg.n_heads) for k in ("induction", "duplicate", "previous")}
    for start in range(0, n_seq, batch_size):
        part = tokens[start:start + batch_size]
        end = torch.full((len(part),), part.shape[1] - 1)
        store = cache_activations(model, part, names)
        for l in range(n_layers):
            for k, v in pattern_scores(store[names[l]], seq_len, int(prepend_bos)).items():
                out[k][l] += v.float().cpu() * len(part) / n_seq
    return out


# ----------------------------------------------------------------------------- attention vs projection


# Attention to S in the attention-vs-projection plot (Sec. 3.1, Fig. 3). "S1+S2" (default): the
# attention to S1 and S2 summed, as the authors' code does (easy_transformer/ioi_utils.py,
# `scatter_attention_and_contribution`: `posses = [s1_pos, s2_pos]`, probabilities summed).
# "S1": ARENA's IOI exercises, offered as a variant.
S_ATTENTION = "S1+S2"


def _s_positions(s_position: str) -> list[str]:
    return ["S1", "S2"] if s_position == "S1+S2" else [s_position]


def attention_projection(model, ds: IOIDataset, heads: Iterable[Head] | None = None,
                         s_position: str = S_ATTENTION, batch_size: int = 100,
                         ) -> dict[str, Float[Tensor, "layer head batch"]]:
    """Per head and prompt: the attention from END to a name, and the head's output at END
    projected on that name's unembedding, ``(z[END, h] @ W_O[h]) . W_U[:, name]``.

    Keys ``attn_IO``, ``proj_IO`` (the IO name at position IO) and ``attn_S``, ``proj_S``
    (the S name; attention to ``s_position``: ``"S1+S2"``, the sum of the attention to S1 and
    S2, by default, as the authors' ``scatter_attention_and_contribution``; ``"S1"`` or
    ``"S2"`` alone as variants, S1 being ARENA's choice). The
    head's output excludes the layer bias; ``W_U`` is the model's (processed) unembedding.
    Entries of heads not asked for are NaN.
    """
    heads = _heads(model, heads)
    layers = sorted({l for l, _ in heads})
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = {k: torch.full((L, H, len(ds)), float("nan")) for k in ("attn_IO", "proj_IO", "attn_S", "proj_S")}
    W_O, W_U = model.W_O, model.W_U
    names = [hook_name("pattern", l) for l in layers] + [hook_name("z", l) for l in layers]
    done = 0
    for part in _batches(ds, batch_size):
        store = cache_activations(model, part.tokens, names)
        end = part.pos["END"]
        sl = slice(done, done + len(part))
        for l, h in heads:
            write = gather(store[hook_name("z", l)][:, :, h], end) @ W_O[l, h]  # [n, d]
            pattern = store[hook_name("pattern", l)]
            for key, poss, tok in (("IO", [part.pos["IO"]], part.io_tokens),
                                   ("S", [positions(part, p) for p in _s_positions(s_position)], part.s_tokens)):
                out[f"attn_{key}"][l, h, sl] = sum(attention_at(pattern, end, pos)[:, h].float().cpu()
                                                   for pos in poss)
                unembed = W_U[:, tok.to(W_U.device)].T  # [n, d]
                out[f"proj_{key}"][l, h, sl] = (write * unembed).sum(-1).float().cpu()
        done += len(part)
    return out


def pearson(x: Float[Tensor, "... n"], y: Float[Tensor, "... n"]) -> Float[Tensor, "..."]:
    """Pearson correlation along the last dimension."""
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x.pow(2).sum(-1).sqrt() * y.pow(2).sum(-1).sqrt())


def attention_projection_correlation(model, ds: IOIDataset, heads: Iterable[Head] | None = None,
                                     s_position: str = S_ATTENTION, batch_size: int = 100,
                                     ) -> dict[str, Float[Tensor, "layer head"]]:
    """Per head, the correlation over prompts between attention to a name and the output's
    projection on that name (see :func:`attention_projection`): ``"IO"``, ``"S"``, and
    ``"pooled"`` (IO and S points together, as in the paper's scatter plots)."""
    pts = attention_projection(model, ds, heads, s_position, batch_size)
    return {
        "IO": pearson(pts["attn_IO"], pts["proj_IO"]),
        "S": pearson(pts["attn_S"], pts["proj_S"]),
        "pooled": pearson(torch.cat([pts["attn_IO"], pts["attn_S"]], -1),
                          torch.cat([pts["proj_IO"], pts["proj_S"]], -1)),
    }
