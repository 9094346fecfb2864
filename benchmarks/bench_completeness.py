"""Chapter 7's completeness searches: batched knockouts against one forward per set.

Run from the repository root:

    python benchmarks/bench_completeness.py                   # ioi-planted, N = 100, 2 threads
    python benchmarks/bench_completeness.py --model gpt2-random --threads 1 --full

Measured in the same run, on the circuit planted in ``ioi-planted`` (each class's heads kept
at the paper's position, ``paper.KEPT_AT``) with mean ablation over p_ABC:

1. **random sets** (the authors' 100, p = 1/2), F(C \\ K) and F(M \\ K) of each. Baseline: the
   code before batching, one forward of N prompts per run (``circuit_logit_diff``,
   ``model_logit_diff``), timed on the first ``--sequential-sets`` sets and given per set;
   batched: ``ablation.completeness`` on all of them, for each ``--max-rows``. Printed: seconds
   per set and the ratio, and the largest difference between the two (float rounding only).
   Then the same masks through ``ablation.ablated_logit_diffs`` with prompts padded together
   (``by_length=False``): what the batching alone gives, without dropping the padding.
2. **greedy search** (``ablation.greedy_completeness``) at the authors' sizes (10 runs x 10
   steps x 10 candidates) with ``--full``, else 2 x 4 x 4 (the CI sizes): the number of
   distinct sets scored and the time; its sequential time is estimated as sets x the
   sequential seconds per set of (1).

Other work on the machine slows both down: say what else was running when quoting a number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ioi-planted")
    ap.add_argument("--n", type=int, default=100, help="prompts (the authors: 100)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--random-sets", type=int, default=100)
    ap.add_argument("--sequential-sets", type=int, default=8, help="random sets timed one at a time")
    ap.add_argument("--max-rows", type=int, nargs="+", default=[500, 1000, 2000])
    ap.add_argument("--full", action="store_true", help="greedy search at the authors' sizes (10x10x10)")
    args = ap.parse_args()
    os.environ.setdefault("IOI_CACHE_DIR", tempfile.mkdtemp())
    torch.set_num_threads(args.threads)
    from ioi_helpers import ablation, dataset, models, paper

    model = models.load_model(args.model)
    tok = models.get_tokenizer()
    ioi = dataset.make_ioi_dataset(tok, args.n, seed=0)
    abc = dataset.make_abc_dataset(tok, ioi)
    values = ablation.ablation_values(model, ioi, abc, "mean")
    planted = getattr(model, "planted", None) or {"Name Mover": [(model.cfg.n_layers - 1, 0)]}
    circuit = {h: [paper.KEPT_AT[c]] for c, heads in planted.items() for h in heads}
    sets = list(ablation.random_sets(circuit, args.random_sets, seed=0).values())
    print(f"{args.model}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}; "
          f"N = {len(ioi)}, {len(circuit)} circuit heads, torch threads {args.threads}")

    t = time.perf_counter()
    seq = []
    for k in sets[:args.sequential_sets]:
        seq.append((ablation.circuit_logit_diff(model, ioi, values, circuit, k),
                    ablation.model_logit_diff(model, ioi, values, k, circuit, "kept")))
    seq_per_set = (time.perf_counter() - t) / len(seq)
    print(f"\n1. random sets: sequential (one forward of {len(ioi)} prompts per run, 2 per set): "
          f"{seq_per_set:.3f} s per set -> {seq_per_set * len(sets):.1f} s for {len(sets)} sets")
    best = None
    for max_rows in args.max_rows:
        t = time.perf_counter()
        rows = ablation.completeness(model, ioi, values, circuit, dict(enumerate(sets)), progress=False,
                                     max_rows=max_rows)
        per_set = (time.perf_counter() - t) / len(sets)
        err = max(max((r["per prompt"][0] - c).abs().max().item(), (r["per prompt"][1] - m).abs().max().item())
                  for r, (c, m) in zip(rows, seq))
        print(f"   batched, max_rows {max_rows:5d}: {per_set:.3f} s per set -> {per_set * len(sets):.1f} s; "
              f"ratio sequential/batched {seq_per_set / per_set:.2f}x; largest difference {err:.1e}")
        if best is None or per_set < best[1]:
            best = (max_rows, per_set)
    masks = ([ablation.circuit_mask(model, ioi, circuit, k) for k in sets]
             + [ablation.model_mask(model, ioi, k, circuit, "kept") for k in sets])
    for by_length in (True, False):
        t = time.perf_counter()
        ablation.ablated_logit_diffs(model, ioi, masks, values, max_rows=best[0], by_length=by_length)
        per_set = 2 * (time.perf_counter() - t) / len(masks)
        print(f"   ablated_logit_diffs, max_rows {best[0]}, {'by length' if by_length else 'padded   '}: "
              f"{per_set:.3f} s per set; ratio sequential/batched {seq_per_set / per_set:.2f}x")

    sizes = (10, 10, 10) if args.full else (2, 4, 4)
    calls = []
    original = ablation.removal_logit_diffs

    def counting(*a, **kw):
        calls.append(len(a[4]))
        return original(*a, **kw)

    ablation.removal_logit_diffs = counting
    t = time.perf_counter()
    runs = ablation.greedy_completeness(model, ioi, values, circuit, *sizes, progress=False, max_rows=best[0])
    took = time.perf_counter() - t
    ablation.removal_logit_diffs = original
    scored = sum(calls)
    print(f"\n2. greedy {sizes[0]} x {sizes[1]} x {sizes[2]} (max_rows {best[0]}): {scored} distinct sets in "
          f"{len(calls)} batches, {took:.1f} s; sequential estimate {scored * seq_per_set:.1f} s "
          f"(ratio {scored * seq_per_set / took:.2f}x); best incompleteness {max(r['score'] for r in runs):.3f}")


if __name__ == "__main__":
    main()
