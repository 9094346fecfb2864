"""The held-out splits of ``ioi-tiny``'s training data: which name pairs, templates and places
the model never saw (dataset construction, shared by :mod:`ioi_helpers.train_tiny`, which trains
on the ``train`` split, and :mod:`ioi_helpers.evaluate_tiny`, which measures the others).

* name **pairs**: the unordered pair {IO, S} falls in bucket ``crc32(sorted pair) % 10``;
  bucket 0 is the calibration split, bucket 1 the test split, buckets 2-9 train;
* **templates**: indices :data:`HELD_OUT_TEMPLATES` (0-based) are held out in both orders;
* **places**: :data:`HELD_OUT_PLACES` never occur in training.
"""

from __future__ import annotations

import zlib
from typing import Callable

from .dataset import Template, make_ioi_dataset, prompt_data, templates

HELD_OUT_TEMPLATES: tuple[int, ...] = (3, 6, 13)
HELD_OUT_PLACES: tuple[str, ...] = ("hospital", "station")
N_PAIR_BUCKETS = 10
CALIBRATION_BUCKET, TEST_BUCKET = 0, 1
SPLITS = ("train", "calibration", "test")


# ----------------------------------------------------------------------------- splits


def pair_bucket(a: str, b: str) -> int:
    """Bucket of an unordered name pair (stable across processes, unlike ``hash``)."""
    x, y = sorted((a, b))
    return zlib.crc32(f"{x}|{y}".encode()) % N_PAIR_BUCKETS


def pair_filter(split: str) -> Callable[[str, str], bool]:
    """``pair_filter`` for :func:`make_ioi_dataset` selecting one split's name pairs."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train":
        return lambda a, b: pair_bucket(a, b) not in (CALIBRATION_BUCKET, TEST_BUCKET)
    bucket = CALIBRATION_BUCKET if split == "calibration" else TEST_BUCKET
    return lambda a, b: pair_bucket(a, b) == bucket


def split_templates(held_out: bool) -> list[Template]:
    """The training templates (``held_out=False``) or the held-out ones, both orders."""
    return [t for t in templates("all") if (t.index in HELD_OUT_TEMPLATES) == held_out]


def split_places(held_out: bool) -> list[str]:
    return [p for p in prompt_data()["places"] if (p in HELD_OUT_PLACES) == held_out]


def split_dataset(tokenizer, split: str, n_prompts: int, seed: int, prepend_bos: bool = False,
                  unseen_templates_and_places: bool = False):
    """IOI prompts of one split.

    ``train`` uses the training templates and places. ``calibration`` and ``test`` use name
    pairs never seen in training with every template and place, or, with
    ``unseen_templates_and_places=True``, only the held-out templates and places.
    """
    if split == "train":
        tmpl, places = split_templates(False), split_places(False)
    elif unseen_templates_and_places:
        tmpl, places = split_templates(True), split_places(True)
    else:
        tmpl, places = templates("all"), list(prompt_data()["places"])
    return make_ioi_dataset(tokenizer, n_prompts, tmpl, seed=seed, prepend_bos=prepend_bos,
                            places=places, pair_filter=pair_filter(split))


def split_description() -> dict:
    names = prompt_data()["names"]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    count = lambda s: sum(pair_filter(s)(a, b) for a, b in pairs)  # noqa: E731
    return {
        "names": "all names of the paper's list are trained on; only name *pairs* are held out",
        "pair_bucket": "zlib.crc32('x|y') % 10 with (x, y) the sorted pair; "
                       f"bucket {CALIBRATION_BUCKET} = calibration, {TEST_BUCKET} = test, others = train",
        "unordered_pairs": {s: count(s) for s in SPLITS},
        "held_out_templates": [t.group for t in split_templates(True)],
        "held_out_places": list(HELD_OUT_PLACES),
        "train": "train pairs x non-held-out templates (both orders) x non-held-out places; all objects",
        "calibration": "calibration pairs x all 30 templates x all places, no BOS (used only to pick the logit scale)",
        "test": "test pairs x all templates x all places; 'test (unseen templates and places)' "
                "restricts it to the held-out templates and places",
    }
