"""What the S-Inhibition heads tell the Name Movers (Sec. 3.2 and App. A).

* :func:`patch_outputs` runs p_IOI with some heads' outputs at one position taken from
  another dataset (the same prompts with their names rewritten, or p_ABC), everything
  downstream recomputed; it returns the logits at END and the attention of chosen heads from
  END to the names.
* :func:`attention_shift` (Fig. 4c): the Name Movers' attention to IO, S1 and S2 with the
  S-Inhibition heads' outputs at END as they are and taken from p_ABC.
* :func:`token_position` (App. A, Fig. 9): the logit difference with the S-Inhibition heads'
  outputs at END taken from each of six variants of the prompt, token signal {orig, random,
  inverted} x position signal {orig, inverted}. The variants are
  :func:`ioi_helpers.dataset.signal_variant` (slots in :data:`dataset.SIGNAL_VARIANTS`, the
  authors' construction from their ``experiments.py``):

  ============  =========  =====================  ===========================================
  token         position   slots (IO, S1, S2)     prompt ("When Mary and John ..., John ...")
  ============  =========  =====================  ===========================================
  orig          orig       A B B                  When Mary and John ..., John
  random        orig       D C C                  When Kate and Bob ..., Bob
  inverted      orig       B A A                  When John and Mary ..., Mary
  orig          inverted   B A B                  When John and Mary ..., John
  random        inverted   C D C                  When Bob and Kate ..., Bob
  inverted      inverted   A B A                  When Mary and John ..., Mary
  ============  =========  =====================  ===========================================

  A = the IO's name, B = the subject's, C and D new names. The token signal is the name at S2
  (and its earlier occurrence); the position signal is where that earlier occurrence sits:
  at S1 (orig) or in the IO's slot (inverted: the first clause's order flipped, ABBA <->
  BABA). Every name keeps its position, so the variant pairs with the prompt token by token.
  ``construction="keep-io"`` gives the book's earlier random variants (A C C, C A C), which
  keep the IO's name.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from . import metrics
from .dataset import SIGNAL_CONSTRUCTIONS, IOIDataset, signal_variant
from .hooks import Head, cache_activations, gather, hook_name, positions, run
from .scores import attention_at

TOKENS = ("orig", "random", "inverted")
POSITION_SIGNALS = ("orig", "inverted")


def patch_outputs(model, ds: IOIDataset, source: IOIDataset, heads: Sequence[Head],
                  position: str = "END", watch: Sequence[Head] = (),
                  to: Sequence[str] = ("IO", "S1", "S2"), batch_size: int = 100,
                  ) -> tuple[Float[Tensor, "batch vocab"], dict[str, Float[Tensor, "batch watch"]]]:
    """Run ``ds`` with each head of ``heads`` writing, at ``position`` (per prompt), the
    output (``hook_z``) it has on ``source`` there; everything after is recomputed.

    ``source`` must have the prompt lengths and named positions of ``ds`` (a rewritten copy
    such as :func:`ioi_helpers.dataset.signal_variant` or p_ABC). Returns the logits at END
    and, for each head of ``watch``, its attention from END to each position of ``to`` in the
    patched run, per prompt: ``{name: [batch, len(watch)]}``. With no ``heads`` this is the
    clean run.
    """
    if source.tokens.shape != ds.tokens.shape or not torch.equal(source.pos[position], ds.pos[position]):
        raise ValueError("source must have the prompt lengths and positions of ds")
    heads = [tuple(h) for h in heads]
    watch = [tuple(h) for h in watch]
    layers = sorted({l for l, _ in heads})
    z_names = [hook_name("z", l) for l in layers]
    p_names = sorted({hook_name("pattern", l) for l, _ in watch})
    logits, att = [], {t: [] for t in to}
    for start in range(0, len(ds), batch_size):
        part, src = ds[start:start + batch_size], source[start:start + batch_size]
        pos = positions(part, position)
        hooks = []
        if heads:
            store = cache_activations(model, src.tokens, z_names)
            rows = torch.arange(len(part))
            for l in layers:
                hs = torch.tensor([h for hl, h in heads if hl == l])
                value = gather(store[hook_name("z", l)], pos)[:, hs]  # [n, h, d_head]

                def patch(z, hook, hs=hs, value=value):
                    z = z.clone()
                    z[rows[:, None], pos.to(z.device)[:, None], hs[None]] = value
                    return z

                hooks.append((hook_name("z", l), patch))
        end_logits, store = run(model, part.tokens, part.pos["END"], fwd_hooks=hooks, cache=p_names)
        logits.append(end_logits.float().cpu())
        for t in to:
            if watch:
                att[t].append(torch.stack([attention_at(store[hook_name("pattern", l)], part.pos["END"],
                                                        positions(part, t))[:, h] for l, h in watch], -1)
                              .float().cpu())
            else:
                att[t].append(torch.zeros(len(part), 0))
    return torch.cat(logits), {t: torch.cat(v) for t, v in att.items()}


def attention_shift(model, ds: IOIDataset, source: IOIDataset, heads: Sequence[Head],
                    movers: Sequence[Head], batch_size: int = 100) -> pd.DataFrame:
    """Fig. 4c: each of ``movers``' mean attention from END to IO, S1 and S2, on ``ds`` as it
    is (``"clean"``) and with ``heads``' outputs at END taken from ``source``
    (``"patched"``), with the logit difference of each run. One row per (mover, run)."""
    rows = []
    for run_name, patched in (("clean", ()), ("patched", heads)):
        logits, att = patch_outputs(model, ds, source, patched, "END", movers, batch_size=batch_size)
        ld = metrics.logit_diff(logits, ds).mean().item()
        for j, (l, h) in enumerate(movers):
            rows.append({"head": f"{l}.{h}", "run": run_name, "logit diff": ld,
                         **{f"attn END->{t}": float(v[:, j].mean()) for t, v in att.items()}})
    return pd.DataFrame(rows)


def token_position(model, ds: IOIDataset, heads: Sequence[Head], seed: int | None = None,
                   batch_size: int = 100, construction: str = "code") -> pd.DataFrame:
    """App. A, Fig. 9: the logit difference (the clean prompt's IO minus S) when ``heads``'
    outputs at END come from each token x position variant of the prompts. One row per
    variant, with the slots it fills and the fraction of prompts where IO still beats S.
    ``construction``: ``"code"`` (the authors', default) or ``"keep-io"`` (see
    :data:`ioi_helpers.dataset.SIGNAL_CONSTRUCTIONS`)."""

    rows = []
    for token in TOKENS:
        for position in POSITION_SIGNALS:
            src = signal_variant(ds, token, position, seed, construction=construction)
            logits, _ = patch_outputs(model, ds, src, heads, "END", batch_size=batch_size)
            ld = metrics.logit_diff(logits, ds)
            rows.append({"token": token, "position": position,
                         "slots (IO, S1, S2)": " ".join(SIGNAL_CONSTRUCTIONS[construction][(token, position)]),
                         "example": src.prompts[0].text,
                         "logit diff": ld.mean().item(), "IO > S": (ld > 0).float().mean().item()})
    return pd.DataFrame(rows)
