"""The Backup Name Mover rule (Sec. 3.4): a drop in the logits once the Name Movers are knocked
out, and, in that knocked-out run, the Name Movers' own attention condition (END->IO more than
END->S1 + END->S2). Checked against hand-written hooks on a tiny random model."""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from ioi_helpers import discovery
from test_patching_knockout import KNOCKED, context_hooks


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path / "cache"))


def attention_by_hand(model, ds, abc, heads, at_end):
    """END->IO, S1, S2 attention per head with ``heads`` replaced by their hand-computed group
    means (test_patching_knockout.context_hooks), one prompt at a time."""
    out = {t: torch.zeros(model.cfg.n_layers, model.cfg.n_heads) for t in ("IO", "S1", "S2")}
    hooks = context_hooks(model, ds, abc, heads, at_end=at_end)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(ds.tokens)  # padding sits after END: causal, harmless
    for i in range(len(ds)):
        end = int(ds.pos["END"][i])
        for t in out:
            k = int(ds.pos[t][i])
            for l in range(model.cfg.n_layers):
                out[t][l] += cache[f"blocks.{l}.attn.hook_pattern"][i, :, end, k] / len(ds)
    return out


@pytest.mark.parametrize("knockout_at", ["END", None])
def test_attention_with_the_name_movers_knocked_out_matches_hand_hooks(knockout_at):
    model = tm.random_model()
    setup = discovery.Setup(model, n_prompts=8, seed=11)
    got = discovery.attention_knocked_out(setup, KNOCKED, knockout_at)
    ref = attention_by_hand(model, setup.ioi, setup.abc, KNOCKED, at_end=knockout_at == "END")
    for t in ref:
        assert torch.allclose(got[t], ref[t], atol=1e-5), t
    # the knockout changes the attention of the heads after the knocked-out layer
    clean = discovery.attention(setup, "END", "IO")
    assert (got["IO"][2] - clean[2]).abs().max() > 1e-3
    assert torch.allclose(got["IO"][:2], clean[:2], atol=1e-5)


def test_a_head_that_attends_to_s_is_no_backup_name_mover():
    """The attention condition bites: heads that pass the effect cut but attend to S more than
    to the IO (after the knockout) are left out, and every selected head meets both parts."""
    model = tm.random_model()
    setup = discovery.Setup(model, n_prompts=10, seed=11)
    backup = discovery.backup_name_movers(setup, KNOCKED, threshold=0.0)
    att = attention_by_hand(model, setup.ioi, setup.abc, KNOCKED, at_end=True)
    attends_io = att["IO"] > att["S1"] + att["S2"]
    passed_cut = {(l, h) for l, h in torch.nonzero(backup.effect <= 0).tolist()} - set(KNOCKED)
    assert set(backup.heads) == {h for h in passed_cut if attends_io[h]}
    assert passed_cut - set(backup.heads), "no head was left out by the attention condition"
    assert "attention END->IO > attention END->S1 + END->S2" in backup.rule
