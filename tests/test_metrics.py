"""Metrics against hand computations."""

import math

import pytest
import torch

from ioi_helpers import dataset, metrics
from ioi_helpers.models import get_tokenizer


@pytest.fixture(scope="module")
def ds():
    return dataset.make_ioi_dataset(get_tokenizer(), 3, seed=0)


def _logits(ds, values):
    """Full logits that are zero except the IO and S entries at END, set by hand."""
    logits = torch.zeros(len(ds), ds.tokens.shape[1], 50257)
    for i, (io, s) in enumerate(values):
        end = int(ds.pos["END"][i])
        logits[i, end, ds.io_tokens[i]] = io
        logits[i, end, ds.s_tokens[i]] = s
        logits[i, end - 1, ds.io_tokens[i]] = 100.0  # not at END: must be ignored
    return logits


def test_logit_diff_by_hand(ds):
    logits = _logits(ds, [(3.0, 1.0), (0.5, 2.5), (4.0, 4.0)])
    assert metrics.logit_diff(logits, ds).tolist() == [2.0, -2.0, 0.0]
    assert metrics.mean_logit_diff(logits, ds) == pytest.approx(0.0)
    assert metrics.io_above_s(logits, ds) == pytest.approx(1 / 3)
    # 2-D logits at END give the same
    end = metrics.at_end(logits, ds)
    assert metrics.logit_diff(end, ds).tolist() == [2.0, -2.0, 0.0]


def test_io_prob_by_hand(ds):
    logits = _logits(ds, [(3.0, 1.0), (0.0, 0.0), (math.log(2.0), 0.0)])
    v = 50257
    expected = [math.exp(3) / (math.exp(3) + math.exp(1) + v - 2),
                1 / v,
                2 / (2 + v - 1)]
    got = metrics.io_prob(logits, ds).tolist()
    assert got == pytest.approx(expected, rel=1e-5)


def test_normalized_patching_metric():
    assert metrics.normalized_patching_metric(3.0, clean=3.0, corrupted=-1.0) == 0.0
    assert metrics.normalized_patching_metric(-1.0, clean=3.0, corrupted=-1.0) == -1.0
    assert metrics.normalized_patching_metric(1.0, clean=3.0, corrupted=-1.0) == -0.5
    assert metrics.normalized_patching_metric(1.0, clean=3.0, corrupted=-1.0, positive=True) == 0.5
    t = metrics.normalized_patching_metric(torch.tensor([3.0, -1.0]), 3.0, -1.0)
    assert t.tolist() == [0.0, -1.0]
    with pytest.raises(ValueError):
        metrics.normalized_patching_metric(1.0, 2.0, 2.0)


def test_bad_logit_shape(ds):
    with pytest.raises(ValueError, match="expected logits"):
        metrics.logit_diff(torch.zeros(3), ds)


def test_does_task_needs_a_positive_mean_and_io_above_s_often_enough():
    from ioi_helpers.metrics import TASK_MIN_IO_ABOVE_S, does_task

    n = 100
    k = int(TASK_MIN_IO_ABOVE_S * n)  # prompts with the IO above S
    above = torch.tensor([1.0] * k + [-0.5] * (n - k))
    assert does_task(above)
    assert not does_task(torch.tensor([1.0] * (k - 1) + [-0.1] * (n - k + 1)))  # too few above
    assert not does_task(torch.tensor([0.1] * k + [-5.0] * (n - k)))  # mean below 0
    assert not does_task(-above)
