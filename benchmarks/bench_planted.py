"""ioi-planted: does the discovery recover the planted circuit, for many seeds?

Run from the repository root:

    python benchmarks/bench_planted.py                    # seeds 0-7, dataset seed = model seed + 100
    python benchmarks/bench_planted.py --seeds 0 1 2 --n 100 --behaviour-n 500

For each model seed: the build time (``planted.build``, calibration included; the baseline
measured in the same run is loading ``gpt2-random``'s Hugging Face model, the same kind of
object at GPT-2-small size), ``discovery.all_classes`` with its default parameters on a
dataset seed other than the calibration one, and the precision / recall of every class
against ``model.planted``. Then the behaviour numbers of issue 10 on ``--behaviour-n`` prompts
of a held-out dataset seed (no BOS, template set "mixed"): mean logit diff, IO probability,
IO > S, p_ABC logit diff, logit diff with the Name Movers mean-ablated (the paper's knockout)
and the faithfulness F(C)/F(M) of the planted circuit. The discovery cache is a fresh
temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def precision_recall(found, planted) -> tuple[float, float]:
    found, planted = set(map(tuple, found)), set(map(tuple, planted))
    tp = len(found & planted)
    precision = tp / len(found) if found else (1.0 if not planted else 0.0)
    recall = tp / len(planted) if planted else 1.0
    return precision, recall


KEPT = {"Name Mover": "END", "Negative Name Mover": "END", "S-Inhibition": "END",
        "Backup Name Mover": "END", "Induction": "S2", "Duplicate Token": "S2",
        "Previous Token": "S1+1"}


def behaviour(model, n: int, data_seed: int) -> dict[str, float]:
    from ioi_helpers import ablation, dataset, metrics
    from ioi_helpers.models import get_tokenizer

    tok = get_tokenizer()
    ds = dataset.make_ioi_dataset(tok, n, "mixed", seed=data_seed, prepend_bos=False)
    abc = dataset.make_abc_dataset(tok, ds)
    s = metrics.summarize(metrics.end_logits(model, ds), ds)
    s_abc = metrics.summarize(metrics.end_logits(model, abc), abc)
    values = ablation.ablation_values(model, ds, abc)
    ko = ablation.model_logit_diff(model, ds, values, model.planted["Name Mover"]).mean().item()
    circuit: dict = {}
    for c, heads in model.planted.items():
        for h in heads:
            circuit.setdefault(h, []).append(KEPT[c])
    f = ablation.faithfulness(model, ds, values, circuit)
    return {"logit diff": s["logit diff"], "IO prob": s["IO prob"], "IO > S": s["IO > S"],
            "p_ABC logit diff": s_abc["logit diff"], "NM knockout logit diff": ko,
            "NM knockout drop": 1 - ko / s["logit diff"], "F(C)/F(M)": f.ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--n", type=int, default=100, help="discovery prompts (the default)")
    parser.add_argument("--data-offset", type=int, default=100,
                        help="dataset seed = model seed + this")
    parser.add_argument("--behaviour-n", type=int, default=500)
    parser.add_argument("--behaviour-seeds", type=int, default=2,
                        help="behaviour numbers for the first this-many seeds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["IOI_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-planted-")

    import pandas as pd

    from ioi_helpers import discovery, models, planted

    models.get_tokenizer()
    t0 = time.perf_counter()
    models.load_hf_model("gpt2-random")
    baseline = time.perf_counter() - t0
    print(f"baseline: gpt2-random Hugging Face model built in {baseline:.2f} s")

    rows, behav = [], []
    for i, seed in enumerate(args.seeds):
        t0 = time.perf_counter()
        hf = planted.build(seed)
        build_s = time.perf_counter() - t0
        model = models.bridge_from_hf(hf, f"ioi-planted(seed={seed})", device="cpu")
        model.planted = hf.planted
        t0 = time.perf_counter()
        setup = discovery.Setup(model, n_prompts=args.n, seed=seed + args.data_offset)
        classes = discovery.all_classes(setup)
        disc_s = time.perf_counter() - t0
        for c in planted.CLASSES:
            p, r = precision_recall(classes[c].heads, hf.planted[c])
            rows.append({"seed": seed, "class": c, "precision": p, "recall": r,
                         "found": " ".join(f"{l}.{h}" for l, h in classes[c].heads),
                         "planted": " ".join(f"{l}.{h}" for l, h in hf.planted[c])})
        exact = all(classes[c].heads == hf.planted[c] for c in planted.CLASSES)
        print(f"seed {seed}: build {build_s:.2f} s ({build_s / baseline:.2f} x baseline), "
              f"discovery {disc_s:.0f} s, all classes exact: {exact}", flush=True)
        if i < args.behaviour_seeds:
            b = behaviour(model, args.behaviour_n, seed + args.data_offset + 1)
            behav.append({"seed": seed, **b})
            print("  " + ", ".join(f"{k} {v:.3f}" for k, v in b.items()), flush=True)
    table = pd.DataFrame(rows)
    print("\nPrecision / recall per class (discovery.all_classes, default parameters, "
          f"N={args.n}, dataset seed = model seed + {args.data_offset}):")
    print(table.groupby("class", sort=False)[["precision", "recall"]].agg(["mean", "min"]).to_string())
    bad = table[(table.precision < 1) | (table.recall < 1)]
    if len(bad):
        print("\nMisses:")
        print(bad.to_string(index=False))
    if behav:
        print(f"\nBehaviour (N={args.behaviour_n}, no BOS, mixed templates, held-out dataset seed):")
        print(pd.DataFrame(behav).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
