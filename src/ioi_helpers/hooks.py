"""Low-level hooking helpers shared by ``patching``, ``ablation`` and ``scores``.

* per-prompt positions: :func:`positions` turns ``"END"``/``"S2"``/... into one index per
  prompt (prompts of different templates have different lengths), :func:`gather` and
  :func:`scatter` read and write ``x[i, pos[i]]``;
* :func:`run` runs the model once with hooks, caching chosen activations and returning the
  logits at END only (the forward stops before the unembedding of the other positions,
  which is a third of GPT-2 small's cost on IOI prompts);
* :func:`progress_bar`: a tqdm bar in a live session, nothing in an executed notebook.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .dataset import POSITIONS, IOIDataset

Head = tuple[int, int]
Hook = tuple[str, Callable]
PROGRESS_ENV_VAR = "IOI_NO_PROGRESS"


# ----------------------------------------------------------------------------- positions


def positions(ds: IOIDataset, where: str | int | Tensor) -> Int[Tensor, "batch"]:
    """One position index per prompt.

    ``where`` is a name from :data:`dataset.POSITIONS` (taken from ``ds.pos``), an absolute
    index (the same for every prompt) or a ``[batch]`` tensor (returned as is).
    """
    if isinstance(where, str):
        if where not in ds.pos:
            raise ValueError(f"unknown position {where!r}; choose one of {POSITIONS}")
        return ds.pos[where]
    if isinstance(where, Tensor):
        if where.shape != (len(ds),):
            raise ValueError(f"a position tensor must have shape [{len(ds)}], got {tuple(where.shape)}")
        return where.long()
    return torch.full((len(ds),), int(where), dtype=torch.long)


def gather(x: Float[Tensor, "batch seq *rest"], pos: Int[Tensor, "batch"]) -> Float[Tensor, "batch *rest"]:
    """``x[i, pos[i]]`` for every prompt ``i``."""
    return x[torch.arange(x.shape[0], device=x.device), pos.to(x.device)]


def scatter(x: Float[Tensor, "batch seq *rest"], pos: Int[Tensor, "batch"],
            values: Float[Tensor, "batch *rest"]) -> Float[Tensor, "batch seq *rest"]:
    """A copy of ``x`` with ``x[i, pos[i]] = values[i]``."""
    out = x.clone()
    out[torch.arange(x.shape[0], device=x.device), pos.to(x.device)] = values.to(x.dtype)
    return out


# ----------------------------------------------------------------------------- running


def hook_name(component: str, layer: int) -> str:
    """Legacy TransformerLens hook name of a component at a layer.

    ``z``, ``q``, ``k``, ``v``, ``pattern`` (attention, per head); ``resid_pre``,
    ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out`` (residual stream, per block).
    """
    if component in ("z", "q", "k", "v", "pattern", "attn_scores"):
        return f"blocks.{layer}.attn.hook_{component}"
    if component in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
        return f"blocks.{layer}.hook_{component}"
    raise ValueError(f"unknown component {component!r}")


def end_logits_from_resid(model, resid: Float[Tensor, "batch seq d_model"],
                          end: Int[Tensor, "batch"]) -> Float[Tensor, "batch vocab"]:
    """Final LayerNorm and unembedding of the final residual stream at END only."""
    x = gather(resid, end)[:, None]
    return model.unembed(model.ln_final(x))[:, 0]


def run(model, tokens: Int[Tensor, "batch seq"], end: Int[Tensor, "batch"],
        fwd_hooks: Sequence[Hook] = (), cache: Iterable[str] = (),
        start_at_layer: int | None = None, resid: Tensor | None = None,
        ) -> tuple[Float[Tensor, "batch vocab"], dict[str, Tensor]]:
    """One forward pass with hooks; returns (logits at END, {hook name: activation}).

    The activations named in ``cache`` are recorded after the hooks in ``fwd_hooks`` ran
    (so they show the intervened values). The run stops at ``ln_final.hook_in`` and only the
    END positions are unembedded. With ``start_at_layer`` the forward starts from ``resid``,
    the residual stream entering that block (it must be the unintervened value there).
    """
    store: dict[str, Tensor] = {}

    def saver(name):  # keyed by the requested name: legacy names are aliases of others
        def save(x, hook):
            store[name] = x.detach()

        return save

    hooks = list(fwd_hooks) + [(name, saver(name)) for name in cache]
    with torch.no_grad():
        out = final_resid(model, tokens, hooks, start_at_layer, resid)
        return end_logits_from_resid(model, out, end), store


def cache_activations(model, tokens: Int[Tensor, "batch seq"], names: Iterable[str],
                      fwd_hooks: Sequence[Hook] = ()) -> dict[str, Tensor]:
    """{hook name: activation} for ``names`` after a forward pass with ``fwd_hooks``, as
    :func:`run` records them (after the hooks in ``fwd_hooks`` ran), for callers that need
    nothing else: the forward stops as soon as the last of them is recorded, so nothing after
    it is computed and nothing is unembedded."""
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    wanted = list(dict.fromkeys(names))
    store: dict[str, Tensor] = {}

    def saver(name):
        def save(x, hook):
            store[name] = x.detach()
            if len(store) == len(wanted):  # everything asked for is in: stop the forward here
                raise StopAtLayerException(x)

        return save

    hooks = list(fwd_hooks) + [(name, saver(name)) for name in wanted]
    with torch.no_grad():
        model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=hooks)
    missing = [n for n in wanted if n not in store]
    if missing:
        raise RuntimeError(f"these hooks did not fire: {missing}")
    return store


def final_resid(model, tokens: Int[Tensor, "batch seq"], fwd_hooks: Sequence[Hook] = (),
                start_at_layer: int | None = None, resid: Tensor | None = None,
                ) -> Float[Tensor, "batch seq d_model"]:
    """The residual stream entering the final LayerNorm, after a forward pass with ``fwd_hooks``
    that stops there (at ``ln_final.hook_in``: no unembedding). ``start_at_layer`` and ``resid``
    as in :func:`run`."""
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    def stop(x, hook):
        raise StopAtLayerException(x)

    hooks = list(fwd_hooks) + [("ln_final.hook_in", stop)]
    device = model.cfg.device
    with torch.no_grad():
        if start_at_layer is None:
            out = model.run_with_hooks(tokens.to(device), fwd_hooks=hooks)
        else:
            out = model.run_with_hooks(resid.to(device), fwd_hooks=hooks, start_at_layer=start_at_layer)
    if out.shape[-1] != model.cfg.d_model:  # the stop hook did not fire
        raise RuntimeError("ln_final.hook_in did not fire: cannot read the final residual stream")
    return out


# ----------------------------------------------------------------------------- progress


def progress_enabled(progress: bool | None = None) -> bool:
    """``progress`` if given; else on in a live Jupyter kernel or a terminal, off when
    ``$IOI_NO_PROGRESS`` is set (the book's papermill runs set it) or output is not
    interactive."""
    if progress is not None:
        return bool(progress)
    if os.environ.get(PROGRESS_ENV_VAR, "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
            return True
    except ImportError:  # pragma: no cover - IPython is a dependency of the book
        pass
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable, progress: bool | None = None, **kwargs):
    """``tqdm.auto.tqdm(iterable)``, disabled unless :func:`progress_enabled`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not progress_enabled(progress), **kwargs)
