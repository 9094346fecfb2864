"""Chapters 2 and 3: Name Movers, Negative Name Movers, S-Inhibition heads and the
token-vs-position experiment (App. A) - the package code behind them, checked against
independent computations, and the discovered classes on ``ioi-tiny``."""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from ioi_helpers import scores


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- copy scores


def test_copy_score_pair_fast_path_matches_unembedding(monkeypatch):
    """The d_head-space shortcut (LN(v W_O) = v W_O / sigma, both signs in one product) gives
    the numbers of sending each output through ln_final and the unembedding."""
    model = tm.random_model()
    ds, _ = tm.datasets(12, seed=4)
    assert scores._final_ln_is_plain(model)  # compatibility mode folds ln_final's gain and bias
    fast = scores.copy_score_pair(model, ds, batch_size=10)
    monkeypatch.setattr(scores, "_final_ln_is_plain", lambda m: False)
    slow = scores.copy_score_pair(model, ds, batch_size=10)
    for key in ("copy", "negative"):
        assert fast[key].shape == (3, 4) and not torch.isnan(fast[key]).any()
        # at most one near-tie at the top-5 boundary may flip per head
        assert (fast[key] - slow[key]).abs().max() <= 1 / (3 * len(ds)) + 1e-9
    assert torch.equal(scores.copy_scores(model, ds, heads=[(1, 2)], negative=True)[1, 2:3],
                       scores.copy_score_pair(model, ds, heads=[(1, 2)])["negative"][1, 2:3])
