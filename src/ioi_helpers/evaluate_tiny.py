"""Measured properties of ``ioi-tiny`` on held-out prompts.

    python -m ioi_helpers.evaluate_tiny            # the bundled checkpoint
    python -m ioi_helpers.evaluate_tiny PATH       # any checkpoint directory

Everything runs through :func:`ioi_helpers.models.load_model` (the TransformerBridge), like the
chapters. Measured:

* the baseline (IO above S, mean logit difference, IO probability) on prompts whose name pair
  was never seen in training, over all templates and places (``test``) and over the held-out
  templates and places only (``test_unseen_templates``); see :mod:`ioi_helpers.train_tiny`;
* previous-token and induction scores of every head on repeated random tokens;
* each head's direct effect on the logit difference at END (its output at END through the
  final LayerNorm, frozen, and the unembedding), and the logit difference left after
  mean-ablating the top 3 heads by direct effect (means over p_ABC per template group and
  position, at every position, as in the paper's knockouts).

The scores come from :func:`ioi_helpers.scores.repeated_token_scores` (50 sequences of 20
random tokens repeated once, no BOS, its defaults) and the knockout from
:mod:`ioi_helpers.ablation`, the same functions the chapters use.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor

from . import ablation, scores
from .dataset import IOIDataset, make_abc_dataset
from .metrics import end_logits, summarize
from .models import get_tokenizer, load_model
from .tiny_splits import split_dataset

Head = tuple[int, int]


# ----------------------------------------------------------------------------- direct effects


@torch.no_grad()
def direct_effects(model, ds: IOIDataset) -> Tensor:
    """Mean direct effect of each head's output at END on logit(IO) - logit(S): [layer, head].

    The bridge (compatibility mode) folds the final LayerNorm's weight into W_U, so the
    direct path is (out - mean(out)) / scale_END @ (W_U[:, IO] - W_U[:, S]).
    """
    tokens = ds.tokens.to(model.cfg.device)
    _, cache = model.run_with_cache(
        tokens, names_filter=lambda n: n.endswith("attn.hook_z") or n == "ln_final.hook_scale")
    b = torch.arange(len(ds))
    end = ds.pos["END"]
    scale = cache["ln_final.hook_scale"].float().cpu()[b, end]  # [b, 1]
    w_u = model.W_U.float().cpu()
    direction = w_u[:, ds.io_tokens] - w_u[:, ds.s_tokens]  # [d_model, b]
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"].float().cpu()[b, end]  # [b, h, d_head]
        res = torch.einsum("bhd,hdm->bhm", z, model.W_O[layer].float().cpu())
        res = (res - res.mean(-1, keepdim=True)) / scale[:, None, :]
        out.append(torch.einsum("bhm,mb->bh", res, direction).mean(0))
    return torch.stack(out)


def top_heads(scores: Tensor, k: int) -> list[Head]:
    idx = scores.flatten().topk(k).indices.tolist()
    n_heads = scores.shape[1]
    return [(i // n_heads, i % n_heads) for i in idx]


# ----------------------------------------------------------------------------- report


def _head(h: Head) -> str:
    return f"{h[0]}.{h[1]}"


def evaluate(model_name: str = "ioi-tiny", n_prompts: int = 500, seed: int = 0,
             prepend_bos: bool = False, device: str = "cpu", model=None) -> dict:
    """All measured properties of a checkpoint (a name or a directory) on held-out prompts."""
    torch.manual_seed(seed)
    tok = get_tokenizer()
    model = model if model is not None else load_model(model_name, device=device)
    out: dict = {"settings": {"model": str(model_name), "n_prompts": n_prompts, "seed": seed,
                              "prepend_bos": prepend_bos}}
    test = split_dataset(tok, "test", n_prompts, seed=seed, prepend_bos=prepend_bos)
    strict = split_dataset(tok, "test", n_prompts, seed=seed + 1, prepend_bos=prepend_bos,
                           unseen_templates_and_places=True)
    for label, ds in (("test", test), ("test_unseen_templates", strict)):
        base = summarize(end_logits(model, ds), ds)
        out[label] = {"N": len(ds), "io_above_s": base["IO > S"], "logit_diff": base["logit diff"],
                      "logit_diff_std": base["logit diff (std)"], "io_prob": base["IO prob"]}
    head_scores = scores.repeated_token_scores(model, seed=seed, prepend_bos=prepend_bos)
    for kind, key in (("previous_token", "previous"), ("induction", "induction"),
                      ("duplicate_token", "duplicate")):
        s = head_scores[key]
        best = top_heads(s, 1)[0]
        out[kind] = {"max": s.max().item(), "head": _head(best), "scores": s.tolist()}
    de = direct_effects(model, test)
    top3 = top_heads(de, 3)
    clean = out["test"]["logit_diff"]
    abc = make_abc_dataset(tok, test)
    values = ablation.ablation_values(model, test, abc, "mean")
    ld_abl = ablation.ablated_logit_diff(model, test, ablation.knockout_mask(model, test, top3),
                                         values).mean().item()
    out["direct_effect"] = {"top3": [_head(h) for h in top3],
                            "top3_values": [de[h].item() for h in top3],
                            "sum_all_heads": de.sum().item(), "scores": de.tolist()}
    out["ablation"] = {"heads": [_head(h) for h in top3], "positions": "all",
                       "logit_diff_before": clean, "logit_diff_after": ld_abl,
                       "fraction_removed": (clean - ld_abl) / clean}
    return out


THRESHOLDS = {
    "IO above S >= 0.97 (both held-out splits)":
        lambda ev: min(ev["test"]["io_above_s"], ev["test_unseen_templates"]["io_above_s"]) >= 0.97,
    "2 <= mean logit diff <= 8 (both held-out splits)":
        lambda ev: all(2 <= ev[k]["logit_diff"] <= 8 for k in ("test", "test_unseen_templates")),
    "a head with induction score >= 0.5": lambda ev: ev["induction"]["max"] >= 0.5,
    "a head with previous-token score >= 0.5": lambda ev: ev["previous_token"]["max"] >= 0.5,
    "mean-ablating the top-3 direct-effect heads removes >= 50% of the logit diff":
        lambda ev: ev["ablation"]["fraction_removed"] >= 0.5,
}


def checks(ev: dict) -> dict[str, bool]:
    """The properties the issue asked of ioi-tiny, each True or False for this evaluation."""
    return {name: bool(test(ev)) for name, test in THRESHOLDS.items()}


def print_report(ev: dict) -> None:
    s = ev["settings"]
    print(f"ioi-tiny evaluation: {s['model']}, N = {s['n_prompts']} per split, seed {s['seed']}, "
          f"prepend_bos = {s['prepend_bos']}")
    for label in ("test", "test_unseen_templates"):
        r = ev[label]
        print(f"  {label:24s} IO > S {r['io_above_s']:.3f}   logit diff {r['logit_diff']:.2f} "
              f"(std {r['logit_diff_std']:.2f})   IO prob {r['io_prob']:.3f}")
    for kind in ("previous_token", "induction", "duplicate_token"):
        print(f"  max {kind} score {ev[kind]['max']:.3f} (head {ev[kind]['head']})")
    d, a = ev["direct_effect"], ev["ablation"]
    print(f"  top-3 direct effect at END: " + ", ".join(
        f"{h} ({v:.2f})" for h, v in zip(d["top3"], d["top3_values"])) +
        f"; all heads together {d['sum_all_heads']:.2f}")
    print(f"  mean-ablating them (all positions): logit diff {a['logit_diff_before']:.2f} -> "
          f"{a['logit_diff_after']:.2f} ({100 * a['fraction_removed']:.0f}% removed)")
    for name, ok in checks(ev).items():
        print(f"  [{'pass' if ok else 'FAIL'}] {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate an ioi-tiny checkpoint on held-out prompts")
    parser.add_argument("model", nargs="?", default="ioi-tiny", help="'ioi-tiny' or a checkpoint directory")
    parser.add_argument("--n-prompts", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prepend-bos", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    ev = evaluate(args.model, args.n_prompts, args.seed, args.prepend_bos)
    print(json.dumps(ev, indent=2) if args.json else "", end="")
    print_report(ev)


if __name__ == "__main__":
    main()
