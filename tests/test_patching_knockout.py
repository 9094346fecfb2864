"""Path patching with the Name Movers knocked out (the Backup Name Movers' experiment, Sec. 3.4).

The claim the engine relies on: step (C) freezes every non-sender head to its x_orig value,
so caches made under the knockout give the exact answer. Checked here against the literal
oracle run inside TransformerLens' own hook context (``model.hooks``), with the p_ABC group
means computed by hand: a knockout mechanism that shares nothing with ``patching.Knockout``
or ``ablation``. The knockout is given as a plain list of heads, the form ``discovery`` uses.
"""

from __future__ import annotations

import pytest
import torch

import oracles
import tiny_models as tm
from ioi_helpers import discovery, patching

TOL = 1e-4
KNOCKED = [(1, 0), (1, 3)]  # the "Name Movers" of the tiny model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def group_means_by_hand(model, ds, abc, heads):
    """For each prompt of ``ds``: the mean hook_z of each head over the p_ABC prompts of its
    template group, position by position (a loop over prompts, one forward each)."""
    out = {head: torch.zeros(len(ds), ds.tokens.shape[1], model.cfg.d_head) for head in heads}
    means = {}
    for i in range(len(ds)):
        g, n = ds.groups[i], int(ds.lengths[i])
        if g not in means:
            members = [j for j in range(len(abc)) if abc.groups[j] == g]
            means[g] = {head: 0 for head in heads}
            for j in members:
                _, cache = model.run_with_cache(abc.tokens[j:j + 1, :n])
                for l, h in heads:
                    means[g][(l, h)] = means[g][(l, h)] + cache[f"blocks.{l}.attn.hook_z"][0, :, h] / len(members)
        for head in heads:
            out[head][i, :n] = means[g][head]
    return out


def context_hooks(model, ds, abc, heads, at_end: bool = False):
    """Hooks replacing ``heads``' outputs by their hand-computed group means, at every position
    or (``at_end``) only at each prompt's END, looked up position by position in a loop."""
    values = group_means_by_hand(model, ds, abc, heads)

    def make(l):
        def hook(z, hook):
            z = z.clone()
            for (hl, hh), v in values.items():
                if hl != l:
                    continue
                if at_end:
                    for i in range(z.shape[0]):
                        e = int(ds.pos["END"][i])
                        z[i, e, hh] = v[i, e]
                else:
                    z[:, :, hh] = v[:, : z.shape[1]]
            return z
        return hook

    return [(f"blocks.{l}.attn.hook_z", make(l)) for l in sorted({l for l, _ in heads})]


CASES = {
    "logits": dict(receivers="logits"),
    "q of 2.1 at END": dict(receivers=[(2, 1)], receiver_input="q", position="END"),
    "kv of 2.3 at S2": dict(receivers=[(2, 3)], receiver_input="kv", position="S2"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_knockout_as_head_list_equals_oracle_in_a_hook_context(name):
    model = tm.random_model()
    ds, abc = tm.datasets(10, seed=11)
    fast = patching.path_patch(model, ds, abc, knockout=KNOCKED, progress=False, **CASES[name])
    senders = [[(l, h)] for l in range(3) for h in range(4)]
    with model.hooks(fwd_hooks=context_hooks(model, ds, abc, KNOCKED)):
        ref = oracles.path_patch_oracle_sweep(model, ds, abc, senders, **CASES[name])
        with torch.no_grad():
            knocked_clean = oracles.metrics.logit_diff(model(ds.tokens), ds).mean().item()
    assert (fast.patched.flatten() - ref).abs().max().item() < TOL
    assert abs(fast.clean - knocked_clean) < 1e-5
    # not vacuous: the knockout changes the result, and some sender still has an effect
    plain = patching.path_patch(model, ds, abc, progress=False, **CASES[name])
    assert (plain.patched - fast.patched).abs().max().item() > 10 * TOL
    assert (ref - fast.clean).abs().max().item() > 10 * TOL
    # a knocked-out head has the same (mean) output on x_orig and x_new: no effect at all
    for head in KNOCKED:
        assert abs(fast.delta[head].item()) < 1e-6


def test_knockout_at_end_equals_oracle_in_a_hook_context():
    """The authors' Name Mover knockout (experiments.py, "Backup NM results"): mean-ablated at
    END only, in every run of path patching."""
    model = tm.random_model()
    ds, abc = tm.datasets(10, seed=11)
    fast = patching.path_patch(model, ds, abc, knockout={h: ["END"] for h in KNOCKED}, progress=False)
    senders = [[(l, h)] for l in range(3) for h in range(4)]
    with model.hooks(fwd_hooks=context_hooks(model, ds, abc, KNOCKED, at_end=True)):
        ref = oracles.path_patch_oracle_sweep(model, ds, abc, senders, receivers="logits")
    assert (fast.patched.flatten() - ref).abs().max().item() < TOL
    everywhere = patching.path_patch(model, ds, abc, knockout=KNOCKED, progress=False)
    assert (everywhere.patched - fast.patched).abs().max().item() > 10 * TOL  # END-only differs


@pytest.mark.parametrize("knockout_at", ["END", None])
def test_discovery_path_with_base_ablation_is_the_knocked_out_sweep(tmp_path, monkeypatch, knockout_at):
    """``discovery.backup_name_movers`` uses exactly that sweep (Name Movers knocked out at END
    by default, as the authors; everywhere as the variant), and applies its rule to it."""
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path))
    model = tm.random_model()
    setup = discovery.Setup(model, n_prompts=10, seed=11)
    ko = {h: [knockout_at] if knockout_at else None for h in KNOCKED}
    ref = patching.path_patch(model, setup.ioi, setup.abc, knockout=ko, progress=False)
    model_ld = patching.path_patch(model, setup.ioi, setup.abc, senders=[(0, 0)], progress=False).clean
    kw = {} if knockout_at == "END" else {"knockout_at": knockout_at}
    backup = discovery.backup_name_movers(setup, KNOCKED, others=[(0, 0)], threshold=0.02, **kw)
    effect = ref.delta / abs(model_ld)  # a fraction of the unablated model's logit diff
    assert torch.allclose(backup.effect, effect, atol=1e-6)
    att = discovery.attention_knocked_out(setup, KNOCKED, knockout_at)  # checked in test_backup_rule.py
    expected = sorted((l, h) for l in range(3) for h in range(4)
                      if effect[l, h] <= -0.02 and att["IO"][l, h] > att["S1"][l, h] + att["S2"][l, h]
                      and (l, h) not in KNOCKED + [(0, 0)])
    assert backup.heads == expected
    assert torch.allclose(backup.extra["before"], discovery.direct_effects(setup).relative)
    assert set(backup.table.loc[backup.table["selected"], "head"]) == {f"{l}.{h}" for l, h in expected}
    # read back from the discovery cache: the second call runs no path patching at all
    with monkeypatch.context() as m:
        def no_patching(*args, **kwargs):
            raise AssertionError("path patching ran again: the result was not read from the cache")
        m.setattr(patching, "path_patch", no_patching)
        m.setattr(patching, "cache_path_patching", no_patching)
        again = discovery.backup_name_movers(discovery.Setup(model, n_prompts=10, seed=11), KNOCKED,
                                             others=[(0, 0)], threshold=0.02, **kw)
    assert again.heads == backup.heads and torch.equal(again.effect, backup.effect)
