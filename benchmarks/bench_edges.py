"""Time of each edge-scoring method, and of a faithfulness curve, on ioi-planted, as a ratio to
one forward pass over the same prompts measured in the same run.

    python benchmarks/bench_edges.py [--n 100] [--steps 5] [--threads 1]

Prints one line per step: wall seconds, CPU seconds and the ratio to one forward (wall), so the
numbers are comparable across machines and loads. A forward here is ``model(p_IOI tokens)``,
all N prompts at once, gradients off (it unembeds every position, as ``model(tokens)`` does);
the line after it is the forward the patched runs use (``hooks.run``: only END is unembedded).
"""

from __future__ import annotations

import argparse
import time

import torch

from ioi_helpers import edges as E
from ioi_helpers import faithfulness as F
from ioi_helpers.dataset import make_abc_dataset, make_ioi_dataset
from ioi_helpers.models import get_tokenizer, load_model


def timed(fn, repeat: int = 1):
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return out, best_wall, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="prompts")
    ap.add_argument("--steps", type=int, default=5, help="EAP-IG steps (MIB's default: 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("ioi-planted")
    tok = get_tokenizer()
    ioi = make_ioi_dataset(tok, args.n, seed=0)  # as discovery.Setup builds them
    abc = make_abc_dataset(tok, ioi)
    graph = E.graph_of(model)
    print(f"ioi-planted: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}; "
          f"{graph.n_edges} edges; N = {args.n} prompts of {ioi.tokens.shape[1]} tokens; "
          f"{torch.get_num_threads()} thread(s)")

    def forward():
        with torch.no_grad():
            return model(ioi.tokens)

    forward()  # warm-up
    _, fwd, fwd_cpu = timed(forward, repeat=5)
    print(f"{'one forward (best of 5)':38s} {fwd:7.3f} s wall {fwd_cpu:7.3f} s CPU      1.0 x")

    from ioi_helpers import hooks

    _, wall, cpu = timed(lambda: hooks.run(model, ioi.tokens, ioi.pos["END"]), repeat=5)
    print(f"{'forward, END logits only (best of 5)':38s} {wall:7.3f} s wall {cpu:7.3f} s CPU {wall / fwd:8.1f} x")

    def report(name, wall, cpu):
        print(f"{name:38s} {wall:7.3f} s wall {cpu:7.3f} s CPU {wall / fwd:8.1f} x")

    results = {}
    for name, fn in [("EAP", lambda: E.eap_scores(model, ioi, abc)),
                     (f"EAP-IG (inputs, steps={args.steps})", lambda: E.eap_ig_scores(model, ioi, abc, steps=args.steps)),
                     ("random", lambda: E.random_scores(graph, seed=0))]:
        results[name], wall, cpu = timed(fn)
        report(f"scores: {name}", wall, cpu)

    corrupted, wall, cpu = timed(lambda: E.sender_activations(model, abc))
    report("p_ABC sender cache (shared)", wall, cpu)
    base, wall, cpu = timed(lambda: F.compute_baselines(model, ioi, abc, corrupted))
    report("baselines full + empty (shared)", wall, cpu)
    keep = E.top_edges(graph, results["EAP"], graph.n_edges // 10)
    _, wall, cpu = timed(lambda: E.edge_patch(model, ioi, abc, keep, corrupted), repeat=3)
    report("one edge-patched forward (best of 3)", wall, cpu)
    for name, scores in results.items():
        curve, wall, cpu = timed(lambda: F.faithfulness_curve(model, ioi, abc, scores, corrupted=corrupted,
                                                              baselines=base))
        report(f"curve (10 points): {name}", wall, cpu)
        print(f"{'':38s} CPR {curve.cpr():.3f}  CMD {curve.cmd():.3f}  "
              f"faithfulness {' '.join(f'{f:.2f}' for f in curve.faithfulness)}")


if __name__ == "__main__":
    main()
