"""Chapter 9's ACDC-style walk: step (C) shared per position (``patching.EdgeWalk``, what
``autodiscovery.acdc`` runs) against one ``path_patch`` call per (receiver, input, position),
the walk as it was written before, measured in the same run on the same prompts.

Run from the repository root:

    python benchmarks/bench_acdc.py                                   # ioi-planted, N = 20
    python benchmarks/bench_acdc.py --model gpt2-planted --positions END,S2,S1+1
    python benchmarks/bench_acdc.py --positions END,S2,S1+1,IO,S1 --no-baseline

Both walks start from the same path patching to the logits, visit the same receivers in the
same order and test the same edges; the script checks that both give the same edges and
scores (largest difference printed) and prints wall time, CPU time and their ratios. Other
work on the machine slows both: the CPU-time ratio is the steadier number.
"""

from __future__ import annotations

import argparse
import time

import torch

from ioi_helpers import autodiscovery, dataset, models, patching


def per_call_walk(model, ioi, abc, tau: float, inputs: str, positions: list[str]):
    """The baseline: the ACDC-style walk with one ``path_patch`` call per (receiver, input,
    position), each computing step (C) for its own senders."""
    caches = patching.cache_path_patching(model, ioi, abc)
    r = patching.path_patch(model, ioi, abc, "logits", caches=caches, progress=False)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    rows = [(f"{l}.{h}", "logits", "logits", "END", float(r.relative[l, h]))
            for l in range(L) for h in range(H)]
    pending = {(l, h) for l in range(L) for h in range(H) if abs(float(r.relative[l, h])) >= tau}
    done = set()
    while pending:
        rcv = max(pending)
        pending.discard(rcv)
        done.add(rcv)
        senders = [(l, h) for l in range(rcv[0]) for h in range(H)]
        if not senders:
            continue
        for c in inputs:
            for pos in positions:
                res = patching.path_patch(model, ioi, abc, [rcv], receiver_input=c, position=pos,
                                          senders=senders, caches=caches, progress=False)
                for (snd,), v in zip(res.senders, res.relative.tolist()):
                    rows.append((f"{snd[0]}.{snd[1]}", f"{rcv[0]}.{rcv[1]}", c, pos, v))
                    if abs(v) >= tau and snd not in done:
                        pending.add(snd)
    return rows


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ioi-planted")
    parser.add_argument("--n", type=int, default=20, help="prompts (chapter 9's acdc_n_prompts: 20)")
    parser.add_argument("--tau", type=float, default=0.03, help="the walk's tau (chapter 9's acdc_tau_min)")
    parser.add_argument("--positions", default="END,S2,S1+1", help="chapter 9's acdc_positions")
    parser.add_argument("--no-baseline", action="store_true", help="time the shared walk only")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    positions = args.positions.split(",")
    model = models.load_model(args.model)
    tok = models.get_tokenizer()
    ioi = dataset.make_ioi_dataset(tok, args.n, "mixed", seed=0, prepend_bos=False)
    abc = dataset.make_abc_dataset(tok, ioi)
    print(f"{args.model}, N = {args.n}, positions {', '.join(positions)}, tau {args.tau:g}, "
          f"torch threads {torch.get_num_threads()}")
    res, wall, cpu = timed(lambda: autodiscovery.acdc(model, ioi, abc, tau=args.tau, tau_min=None,
                                                      positions=positions, progress=False))
    receivers = res.edges["receiver"].nunique() - 1
    print(f"shared step C (acdc):    {wall:7.1f} s wall, {cpu:7.1f} CPU-s; {len(res.edges)} edges "
          f"tested, {receivers} head receivers")
    if args.no_baseline:
        return
    rows, wall0, cpu0 = timed(lambda: per_call_walk(model, ioi, abc, args.tau, "qkv", positions))
    print(f"one call per edge set:   {wall0:7.1f} s wall, {cpu0:7.1f} CPU-s; {len(rows)} edges tested")
    ours = {tuple(r[:4]): r[4] for r in res.edges.itertuples(index=False)}
    base = {tuple(r[:4]): r[4] for r in rows}
    assert ours.keys() == base.keys(), "the two walks tested different edges"
    diff = max(abs(ours[k] - base[k]) for k in base)
    print(f"same edges; largest score difference {diff:.2e} (fraction of the clean logit diff)")
    print(f"speed-up: {wall0 / wall:.1f}x wall, {cpu0 / cpu:.1f}x CPU")


if __name__ == "__main__":
    main()
