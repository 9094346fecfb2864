"""Brute-force references: the literal algorithms, with hooks and full forward passes.

Deliberately independent of ``ioi_helpers.patching``: nothing here shares its code, its
caches or its shortcuts. Used by the tests and by ``benchmarks/bench_path_patching.py``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ioi_helpers import metrics

Head = tuple[int, int]


def model_device(model) -> torch.device:
    """Where the model's weights live: tokens and masks are moved there (CPU or CUDA)."""
    return next(model.parameters()).device


def _knockout_hooks(model, knockout):
    """hook_z of the knocked-out heads replaced by the given values (mask, values)."""
    if knockout is None:
        return []
    mask, values = knockout

    def ko(z, hook):
        l = int(hook.name.split(".")[1])
        return torch.where(mask[l][..., None].to(z.device), values[l].to(z.device), z)

    return [(f"blocks.{l}.attn.hook_z", ko) for l in range(model.cfg.n_layers)]


def _cache_z(model, tokens, knockout=None) -> dict[int, torch.Tensor]:
    store = {}

    def save(x, hook):
        store[int(hook.name.split(".")[1])] = x.detach().clone()

    hooks = _knockout_hooks(model, knockout)
    hooks += [(f"blocks.{l}.attn.hook_z", save) for l in range(model.cfg.n_layers)]
    with torch.no_grad():
        model.run_with_hooks(tokens.to(model_device(model)), fwd_hooks=hooks)
    return store


def path_patch_oracle(model, orig, new, senders: Sequence[Head], receivers="logits",
                      receiver_input: str = "q", position: str = "END",
                      metric: Callable | None = None, z_orig=None, z_new=None,
                      knockout=None) -> float:
    """Algorithm 1 of the paper, literally, for one sender group; returns the metric after (D).

    (A) run x_new, record the senders' outputs (hook_z); (B) run x_orig, record every head's
    output; (C) run x_orig with every hook_z replaced by its x_orig value except the senders',
    replaced by their x_new value (MLPs and LayerNorms run normally), recording the receivers'
    inputs (hook_q/k/v of the receiver heads, or the final residual stream); (D) run x_orig
    with the receivers' inputs patched at ``position`` (per prompt) and nothing else touched.
    ``knockout=(mask, values)``: those head outputs are replaced in every one of the runs.
    """
    metric = metric or (lambda end_logits: metrics.logit_diff(end_logits, orig).mean())
    n_layers = model.cfg.n_layers
    senders = {tuple(h) for h in senders}
    z_new = z_new if z_new is not None else _cache_z(model, new.tokens, knockout)  # (A)
    z_orig = z_orig if z_orig is not None else _cache_z(model, orig.tokens, knockout)  # (B)

    def freeze(x, hook):
        l = int(hook.name.split(".")[1])
        out = z_orig[l].clone()
        for sl, sh in senders:
            if sl == l:
                out[:, :, sh] = z_new[l][:, :, sh].to(out.device)
        return out

    if receivers == "logits":
        rec_names = [f"blocks.{n_layers - 1}.hook_resid_post"]
    else:
        rec_names = sorted({f"blocks.{l}.attn.hook_{c}" for l, _ in receivers for c in receiver_input})
    recorded = {}

    def record(x, hook):
        recorded[hook.name] = x.detach().clone()

    hooks_c = _knockout_hooks(model, knockout)  # (then overridden by the freeze)
    hooks_c += [(f"blocks.{l}.attn.hook_z", freeze) for l in range(n_layers)]
    hooks_c += [(name, record) for name in rec_names]
    with torch.no_grad():
        model.run_with_hooks(orig.tokens.to(model_device(model)), fwd_hooks=hooks_c)  # (C)

    rows = torch.arange(len(orig), device=model_device(model))
    pos = orig.pos[position].to(model_device(model))

    def patch(x, hook):
        x = x.clone()
        if receivers == "logits":
            x[rows, pos] = recorded[hook.name][rows, pos]
        else:
            l = int(hook.name.split(".")[1])
            for rl, rh in receivers:
                if rl == l:
                    x[rows, pos, rh] = recorded[hook.name][rows, pos, rh]
        return x

    with torch.no_grad():
        hooks_d = _knockout_hooks(model, knockout) + [(n, patch) for n in rec_names]
        logits = model.run_with_hooks(orig.tokens.to(model_device(model)), fwd_hooks=hooks_d)  # (D)
    return torch.as_tensor(metric(metrics.at_end(logits, orig))).float().mean().item()


def path_patch_oracle_sweep(model, orig, new, sender_groups: Sequence[Sequence[Head]], **kwargs,
                            ) -> torch.Tensor:
    """The oracle for each sender group, one group at a time (steps A and B cached once, as
    any implementation would)."""
    ko = kwargs.get("knockout")
    z_new, z_orig = _cache_z(model, new.tokens, ko), _cache_z(model, orig.tokens, ko)
    return torch.tensor([path_patch_oracle(model, orig, new, g, z_orig=z_orig, z_new=z_new, **kwargs)
                         for g in sender_groups])


class SingleEdgeOracle:
    """Edges patched one at a time, by hand on a Hugging Face ``GPT2LMHeadModel`` (no hooks and
    nothing of ``ioi_helpers.edges``): :meth:`effects` is the mean change of the logit difference
    when one edge alone carries its sender's p_ABC output, the rest of the model running on
    p_IOI (the receiver's input, before its LayerNorm, gets ``p_ABC - p_IOI`` output of the
    sender at every position). Senders and receivers are MIB's node names (``input``,
    ``a{l}.h{h}``; ``a{l}.h{h}<q|k|v>``, ``logits``). The clean run is cached once; each edge
    recomputes its receiver's head, then the layers after it (the last one at END only)."""

    def __init__(self, hf, ioi, abc):
        self.tf, self.W_U = hf.transformer, hf.lm_head.weight
        self.H, d = hf.config.n_head, hf.config.n_embd
        self.dh = d // self.H
        self.end = ioi.pos["END"]
        self.answer = self.W_U[ioi.io_tokens] - self.W_U[ioi.s_tokens]  # [b, d]
        p = int(self.end.max()) + 1  # later positions cannot reach END
        self.causal = torch.ones(p, p, dtype=torch.bool).tril()
        with torch.no_grad():
            self.clean, self.corr = self._forward(ioi.tokens[:, :p]), self._forward(abc.tokens[:, :p])
            self.logit_diff = self._logit_diff(self._at_end(self.clean["final"][None]))[0]  # [b]

    @staticmethod
    def _ln(x, m):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)

    def _proj(self, blk, x, c: str, h: int | None = None):
        """q, k or v of every head ([..., H, dh]) or of head h ([..., dh]) from LN'd input x."""
        i = "qkv".index(c)
        W = blk.attn.c_attn.weight.unflatten(1, (3, self.H, self.dh))[:, i]
        b = blk.attn.c_attn.bias.unflatten(0, (3, self.H, self.dh))[i]
        return x @ W[:, h] + b[h] if h is not None else torch.einsum("...d,dhe->...he", x, W) + b

    def _attend(self, q, k, v, end=None):
        """Causal attention, [B, p, (H,) dh]; with ``end`` ([B]) q is the END row only."""
        scale = self.dh ** -0.5
        if end is None:
            s = torch.einsum("bq...e,bk...e->b...qk", q, k) * scale
            a = s.masked_fill(~self.causal, float("-inf")).softmax(-1)
            return torch.einsum("b...qk,bk...e->bq...e", a, v)
        s = torch.einsum("b...e,bk...e->b...k", q, k) * scale
        late = torch.arange(k.shape[1])[None] > end[:, None]
        a = s.masked_fill(late.view(len(end), *[1] * (s.dim() - 2), -1), float("-inf")).softmax(-1)
        return torch.einsum("b...k,bk...e->b...e", a, v)

    def _wo(self, blk):
        return blk.attn.c_proj.weight.unflatten(0, (self.H, self.dh))  # [H, dh, d]

    def _block(self, blk, x):
        qkv = [self._proj(blk, self._ln(x, blk.ln_1), c) for c in "qkv"]
        x = x + torch.einsum("bphe,hed->bpd", self._attend(*qkv), self._wo(blk)) + blk.attn.c_proj.bias
        return x + blk.mlp(self._ln(x, blk.ln_2))

    def _last_block_at_end(self, blk, x):  # [B, p, d] -> [B, d] at END
        h1, end, rows = self._ln(x, blk.ln_1), self.end.repeat(len(x) // len(self.end)), torch.arange(len(x))
        z = self._attend(self._proj(blk, h1[rows, end], "q"), self._proj(blk, h1, "k"),
                         self._proj(blk, h1, "v"), end)
        x = x[rows, end] + torch.einsum("bhe,hed->bd", z, self._wo(blk)) + blk.attn.c_proj.bias
        return x + blk.mlp(self._ln(x, blk.ln_2))

    def _forward(self, tokens):
        x = self.tf.wte(tokens) + self.tf.wpe(torch.arange(tokens.shape[1]))
        c = {"input": x, "pre": [], "mid": [], "qkv": [], "out": []}
        for blk in self.tf.h:
            c["pre"].append(x)
            qkv = [self._proj(blk, self._ln(x, blk.ln_1), k) for k in "qkv"]
            o = torch.einsum("bphe,hed->bphd", self._attend(*qkv), self._wo(blk))  # per head
            x = x + o.sum(2) + blk.attn.c_proj.bias
            c["mid"].append(x)
            c["qkv"].append(qkv)
            c["out"].append(o)
            x = x + blk.mlp(self._ln(x, blk.ln_2))
        c["final"] = x
        return c

    def _at_end(self, x):  # [E, b, p, ...] -> [E, b, ...]
        return x[:, torch.arange(x.shape[1]), self.end]

    def _logit_diff(self, x_end):  # [E, b, d] -> [E, b]
        return (self._ln(x_end, self.tf.ln_f) * self.answer).sum(-1)

    def _sender(self, c, node: str):
        if node == "input":
            return c["input"]
        l, h = map(int, node[1:].split(".h"))
        return c["out"][l][:, :, h]

    @torch.no_grad()
    def effects(self, senders: Sequence[str], receiver: str) -> torch.Tensor:
        """``[len(senders)]``: the mean change of the logit difference, each edge alone."""
        delta = torch.stack([self._sender(self.corr, s) - self._sender(self.clean, s) for s in senders])
        E, b, p, _ = delta.shape
        c, last = self.clean, len(self.tf.h) - 1
        if receiver == "logits":
            return (self._logit_diff(self._at_end(c["final"] + delta)) - self.logit_diff).mean(1)
        l, h = map(int, receiver[1:-3].split(".h"))
        blk = self.tf.h[l]
        qkv = [t[None, :, :, h].expand(E, b, p, self.dh) for t in c["qkv"][l]]
        qkv["qkv".index(receiver[-2])] = self._proj(blk, self._ln(c["pre"][l] + delta, blk.ln_1),
                                                    receiver[-2], h)
        flat = [t.flatten(0, 1) for t in qkv]
        if l == last:  # the END row only
            z = self._attend(self._at_end(qkv[0]).flatten(0, 1), *flat[1:], self.end.repeat(E))
            x = self._at_end((c["mid"][l] - c["out"][l][:, :, h])[None])
            x = x + z.unflatten(0, (E, b)) @ self._wo(blk)[h]
            x = x + blk.mlp(self._ln(x, blk.ln_2))
        else:
            z = self._attend(*flat).unflatten(0, (E, b))
            x = c["mid"][l] - c["out"][l][:, :, h] + z @ self._wo(blk)[h]
            x = (x + blk.mlp(self._ln(x, blk.ln_2))).flatten(0, 1)
            for blk in self.tf.h[l + 1:last]:
                x = self._block(blk, x)
            x = self._last_block_at_end(self.tf.h[last], x).unflatten(0, (E, b))
        return (self._logit_diff(x) - self.logit_diff).mean(1)
