"""Metrics on the logits at END: logit difference, IO probability, IO-above-S, and the
normalised patching metric.

All functions take either full logits ``[batch, seq, vocab]`` (read at each prompt's END) or
logits already taken at END ``[batch, vocab]``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .dataset import IOIDataset


def at_end(logits: Tensor, ds: IOIDataset) -> Float[Tensor, "batch vocab"]:
    """Logits at each prompt's END position."""
    if logits.ndim == 2:
        return logits
    if logits.ndim != 3:
        raise ValueError(f"expected logits [batch, seq, vocab] or [batch, vocab], got {tuple(logits.shape)}")
    return logits[torch.arange(logits.shape[0]), ds.pos["END"].to(logits.device)]


def logit_diff(logits: Tensor, ds: IOIDataset) -> Float[Tensor, "batch"]:
    """logit(IO) - logit(S) at END, per prompt."""
    end = at_end(logits, ds)
    idx = torch.arange(end.shape[0], device=end.device)
    return end[idx, ds.io_tokens.to(end.device)] - end[idx, ds.s_tokens.to(end.device)]


def mean_logit_diff(logits: Tensor, ds: IOIDataset) -> float:
    return logit_diff(logits, ds).mean().item()


def io_prob(logits: Tensor, ds: IOIDataset) -> Float[Tensor, "batch"]:
    """Probability of the IO token at END (softmax over the whole vocabulary)."""
    end = at_end(logits, ds).double()  # softmax over 50k entries: float64 is cheap here
    probs = end.softmax(-1)
    return probs[torch.arange(end.shape[0], device=end.device), ds.io_tokens.to(end.device)].float()


def io_above_s(logits: Tensor, ds: IOIDataset) -> float:
    """Fraction of prompts whose IO logit exceeds the S logit at END."""
    return (logit_diff(logits, ds) > 0).float().mean().item()


def normalized_patching_metric(patched: Tensor | float, clean: float, corrupted: float,
                               positive: bool = False) -> Tensor | float:
    """(patched - clean) / (clean - corrupted): 0 means "as clean", -1 "as corrupted".

    ``positive=True`` gives the twin 1 + that: 1 = clean, 0 = corrupted (the form used for
    activation-patching recovery plots). ``clean`` and ``corrupted`` are mean logit diffs.
    """
    denom = clean - corrupted
    if denom == 0:
        raise ValueError("clean and corrupted logit differences are equal; the metric is undefined")
    value = (patched - clean) / denom
    return value + 1 if positive else value


def summarize(logits: Tensor, ds: IOIDataset) -> dict[str, float]:
    """The paper's baseline table for one set of logits."""
    ld = logit_diff(logits, ds)
    return {
        "logit diff": ld.mean().item(),
        "logit diff (std)": ld.std().item() if len(ld) > 1 else 0.0,
        "IO prob": io_prob(logits, ds).mean().item(),
        "IO > S": (ld > 0).float().mean().item(),
    }


@torch.no_grad()
def end_logits(model, ds: IOIDataset, batch_size: int = 100) -> Float[Tensor, "batch vocab"]:
    """Run the model on ``ds`` and return the logits at END only (batched)."""
    outs = []
    for start in range(0, len(ds), batch_size):
        part = ds[start : start + batch_size]
        logits = model(part.tokens.to(model.cfg.device))
        outs.append(at_end(logits, part).float().cpu())
    return torch.cat(outs)


# Does the model do the task? One criterion for every chapter and every discovery rule: the
# rules' thresholds are fractions of the clean logit diff, which mean nothing unless the model
# prefers the IO, and a model at chance (IO above S on about half the prompts) has no circuit
# for the task. 0.6 is this book's choice ("clearly above chance"), not a number of the paper.
TASK_MIN_IO_ABOVE_S = 0.6


def does_task(logit_diffs: Float[Tensor, "batch"]) -> bool:
    """True when the per-prompt logit diffs show the task: mean logit diff > 0 and the IO above
    S on at least :data:`TASK_MIN_IO_ABOVE_S` of the prompts."""
    ld = torch.as_tensor(logit_diffs).float()
    return bool(ld.mean() > 0) and bool((ld > 0).float().mean() >= TASK_MIN_IO_ABOVE_S)


def task_criterion() -> str:
    """:func:`does_task` in words, for the chapters' verdicts."""
    return f"mean logit diff > 0 and IO above S on at least {TASK_MIN_IO_ABOVE_S:.0%} of prompts"
