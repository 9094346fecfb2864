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
