"""Path patching: the fast engine vs the literal algorithm (the tests' brute-force oracle).

Run from the repository root:

    python benchmarks/bench_path_patching.py                 # N = 100, gpt2-random
    python benchmarks/bench_path_patching.py --n 20 --qkv-n 20   # a quick look

Two sweeps over every sender head (144 on GPT-2 small's shape), each timed side by side:

1. senders -> logits (the direct-effect sweep that finds the Name Movers);
2. senders -> the queries of three layer-9/10 heads at END (the sweep that finds the
   S-Inhibition heads; the heads are the paper's Name Movers, meaningless on random weights
   but the same shapes and cost).

For each: wall time and CPU time of both (steps A and B included in both), the ratios, the
largest absolute difference between the two [layer, head] results, and peak memory: the
largest resident-set increase over the phase's starting point (sampled every 5 ms; the
process peak is printed too). Other processes may share the CPU, and the load can change
between the two phases: the CPU-time ratio is the steadier of the two.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from oracles import path_patch_oracle_sweep  # noqa: E402

from ioi_helpers import patching  # noqa: E402
from ioi_helpers.dataset import make_abc_dataset, make_ioi_dataset  # noqa: E402
from ioi_helpers.models import get_tokenizer, load_model  # noqa: E402


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Largest RSS increase (MiB) over the value at entry, sampled in a thread."""

    def __enter__(self):
        self.start = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())
        self.increase = self.peak - self.start


def compare(title, model, ds, abc, **kwargs):
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = [[(l, h)] for l in range(n_layers) for h in range(n_heads)]
    print(f"\n== {title}: {len(heads)} senders, N = {len(ds)}")
    with PeakRSS() as mem_fast:
        t0, c0 = time.perf_counter(), time.process_time()
        fast = patching.path_patch(model, ds, abc, progress=False, **kwargs)
        t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
    print(f"fast   : wall {t_fast:8.2f} s  cpu {c_fast:8.2f} s  peak RSS +{mem_fast.increase:7.1f} MiB",
          flush=True)
    with PeakRSS() as mem_ref:
        t0, c0 = time.perf_counter(), time.process_time()
        ref = path_patch_oracle_sweep(model, ds, abc, heads, **kwargs).reshape(n_layers, n_heads)
        t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
    print(f"oracle : wall {t_ref:8.2f} s  cpu {c_ref:8.2f} s  peak RSS +{mem_ref.increase:7.1f} MiB")
    diff = (fast.patched - ref).abs().max().item()
    print(f"speed-up (oracle / fast): wall {t_ref / t_fast:.1f}x, cpu {c_ref / c_fast:.1f}x")
    print(f"max |fast - oracle| over [layer, head]: {diff:.2e}   "
          f"(largest |effect| {fast.delta.abs().max().item():.3e}, clean {fast.clean:.4f})")
    return t_fast, t_ref, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2-random")
    ap.add_argument("--n", type=int, default=100, help="prompts for the logits sweep")
    ap.add_argument("--qkv-n", type=int, default=100, help="prompts for the q/k/v sweep (0 = skip)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a shared 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: %(default)s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    tok = get_tokenizer()
    print(f"model {model.ioi_model_name}, torch threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}")
    ds = make_ioi_dataset(tok, args.n, seed=args.seed)
    warm = ds[:2]  # one-time initialisation (thread pools, allocator) outside the timings
    patching.path_patch(model, warm, make_abc_dataset(tok, warm), senders=[(0, 0)], progress=False)
    compare("senders -> logits", model, ds, make_abc_dataset(tok, ds))
    if args.qkv_n:
        ds = make_ioi_dataset(tok, args.qkv_n, seed=args.seed)
        receivers = [(9, 6), (9, 9), (10, 0)]
        receivers = [(l, h) for l, h in receivers if l < model.cfg.n_layers]
        compare(f"senders -> q of {receivers} at END", model, ds, make_abc_dataset(tok, ds),
                receivers=receivers, receiver_input="q", position="END")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
