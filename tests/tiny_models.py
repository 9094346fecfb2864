"""Tiny GPT-2s for fast, deterministic tests of the interventions engine.

* :func:`random_model`: random weights at a large init scale (peaked attention, large
  activations, random LayerNorm gains and biases), so that patching effects are far above
  the test tolerances and the LN folding of compatibility mode is exercised.
* :func:`trained_model`: the same architecture trained for a few seconds on IOI prompts
  (loss at END only), a model with learned rather than random structure.
* :func:`ioi_tiny`: the project's bundled trained stand-in (a missing checkpoint fails the test).

All are wrapped exactly as ``models.load_model`` wraps a model (``models.bridge_from_hf``),
on :data:`TEST_DEVICE`: ``$IOI_TEST_DEVICE`` (e.g. ``IOI_TEST_DEVICE=cuda python -m pytest``),
else the CPU.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from ioi_helpers import models
from ioi_helpers.dataset import make_abc_dataset, make_ioi_dataset

TEST_DEVICE = os.environ.get("IOI_TEST_DEVICE", "cpu")


def _config(n_layer: int, n_head: int, n_embd: int, init: float):
    from transformers import GPT2Config

    return GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=64,
                      initializer_range=init)


@lru_cache(maxsize=None)
def random_model(n_layer: int = 3, n_head: int = 4, n_embd: int = 64, seed: int = 0,
                 init: float = 0.3):
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        hf = GPT2LMHeadModel(_config(n_layer, n_head, n_embd, init))
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if ".ln_" in name or name.startswith("transformer.ln_f"):
                    p.add_(0.3 * torch.randn_like(p))
    return models.bridge_from_hf(hf, f"tiny-random(L{n_layer},H{n_head},d{n_embd},s{seed})",
                                 device=TEST_DEVICE)


CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "ioi-tests"


@lru_cache(maxsize=None)
def trained_model(n_layer: int = 3, n_head: int = 4, n_embd: int = 64, steps: int = 100,
                  seed: int = 0):
    """A tiny GPT-2 trained to predict the IO name at END (cross-entropy at END only).

    Training is seeded and single-threaded; the weights are kept under ``.cache/ioi-tests``
    (git-ignored) so later test runs skip the ~10 s of training.
    """
    from transformers import GPT2LMHeadModel

    name = f"tiny-trained-L{n_layer}-H{n_head}-d{n_embd}-steps{steps}-seed{seed}-torch{torch.__version__}"
    path = CACHE_DIR / f"{name}.pt"
    hf = GPT2LMHeadModel(_config(n_layer, n_head, n_embd, 0.02))
    if path.exists():
        hf.load_state_dict(torch.load(path, weights_only=True))
    else:
        tok = models.get_tokenizer()
        data = make_ioi_dataset(tok, 2048, seed=1234)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                hf = GPT2LMHeadModel(_config(n_layer, n_head, n_embd, 0.02))
                opt = torch.optim.AdamW(hf.parameters(), lr=3e-3)
                gen = torch.Generator().manual_seed(seed)
                hf.train()
                for _ in range(steps):
                    idx = torch.randint(0, len(data), (32,), generator=gen)
                    hidden = hf.transformer(data.tokens[idx]).last_hidden_state
                    end = hidden[torch.arange(32), data.pos["END"][idx]]
                    loss = torch.nn.functional.cross_entropy(hf.lm_head(end), data.io_tokens[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        torch.save(hf.state_dict(), path)
    return models.bridge_from_hf(hf.eval(), f"tiny-trained(L{n_layer},{steps} steps)", device=TEST_DEVICE)


def ioi_tiny():
    """The bundled ``ioi-tiny`` model. It ships with the package, so a missing checkpoint is a
    broken install: the test fails (never skips)."""
    import pytest

    if not (models.TINY_DIR / "model.safetensors").exists():
        pytest.fail(f"the bundled ioi-tiny checkpoint is missing from {models.TINY_DIR}", pytrace=False)
    return models.load_model("ioi-tiny", device=TEST_DEVICE)


def ioi_planted(seed: int = 0):
    """``ioi-planted``: the paper's seven classes planted in known heads (``model.planted``)."""
    return models.load_model("ioi-planted", seed=seed, device=TEST_DEVICE)


@lru_cache(maxsize=None)
def datasets(n: int = 16, seed: int = 0, template_set: str = "mixed", prepend_bos: bool = False):
    """(p_IOI, p_ABC) pair of ``n`` prompts."""
    tok = models.get_tokenizer()
    ds = make_ioi_dataset(tok, n, seed=seed, template_set=template_set, prepend_bos=prepend_bos)
    return ds, make_abc_dataset(tok, ds)


def single_template(n: int = 8, seed: int = 0, prepend_bos: bool = False):
    """(p_IOI, p_ABC) with one template: named positions are the same absolute index in
    every prompt, so TransformerLens' absolute-position sweeps are comparable."""
    from ioi_helpers.dataset import templates

    tok = models.get_tokenizer()
    t = [templates("baba")[2]]
    ds = make_ioi_dataset(tok, n, seed=seed, template_set=t, prepend_bos=prepend_bos)
    return ds, make_abc_dataset(tok, ds)
