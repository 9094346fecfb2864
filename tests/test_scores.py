"""Head scores on hand-built weights and patterns whose answers are known, and against
independent hand-written computations (raw Hugging Face weights, explicit loops)."""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from ioi_helpers import models, scores


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- copy score


def copier_model():
    """Block 0 writes nothing and there are no position embeddings, so the residual after
    MLP 0 is the token embedding; head 1.0 has OV = identity, head 2.0 has OV = -identity."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    d = 64
    hf = GPT2LMHeadModel(GPT2Config(n_layer=3, n_head=1, n_embd=d, n_positions=64))
    eye = torch.eye(d)
    with torch.no_grad():
        hf.transformer.wpe.weight.zero_()
        b0 = hf.transformer.h[0]
        for p in (b0.attn.c_proj.weight, b0.attn.c_proj.bias, b0.mlp.c_proj.weight, b0.mlp.c_proj.bias):
            p.zero_()
        for layer, sign in ((1, 1.0), (2, -1.0)):
            attn = hf.transformer.h[layer].attn
            attn.c_attn.weight[:, 2 * d:] = eye  # value = x (Conv1D: [in, out])
            attn.c_attn.bias[2 * d:] = 0
            attn.c_proj.weight.copy_(sign * eye)
            attn.c_proj.bias.zero_()
    return models.bridge_from_hf(hf, "copier", device="cpu")


def test_copy_score_of_identity_and_negated_ov():
    model = copier_model()
    ds, _ = tm.datasets(10)
    pos = scores.copy_scores(model, ds, heads=[(1, 0), (2, 0)])
    neg = scores.copy_scores(model, ds, heads=[(1, 0), (2, 0)], negative=True)
    assert pos[1, 0] == 1.0 and pos[2, 0] == 0.0
    assert neg[1, 0] == 0.0 and neg[2, 0] == 1.0
    assert torch.isnan(pos[0, 0])  # not asked for


def hand_copy_score(hf, tokens, name_pos, layer, head, n_heads, k=5, sign=1.0):
    """The copy score from the raw Hugging Face weights with explicit LayerNorms."""
    tr = hf.transformer
    with torch.no_grad():
        hidden = tr(tokens, output_hidden_states=True).hidden_states[1]  # after block 0
        d = hidden.shape[-1]
        dh = d // n_heads
        block = tr.h[layer]
        hits = total = 0
        for i in range(tokens.shape[0]):
            for p in name_pos[i]:
                x = block.ln_1(hidden[i, p])
                v = x @ block.attn.c_attn.weight[:, 2 * d + head * dh: 2 * d + (head + 1) * dh]
                v = v + block.attn.c_attn.bias[2 * d + head * dh: 2 * d + (head + 1) * dh]
                o = sign * (v @ block.attn.c_proj.weight[head * dh:(head + 1) * dh])
                logits = tr.ln_f(o) @ tr.wte.weight.T
                hits += int(tokens[i, p] in logits.topk(k).indices)
                total += 1
    return hits / total


@pytest.mark.parametrize("negative", [False, True])
def test_copy_score_matches_raw_weights(negative):
    model = tm.random_model()
    ds, _ = tm.datasets(12)
    heads = [(1, 0), (2, 3), (0, 2)]
    got = scores.copy_scores(model, ds, heads=heads, negative=negative)
    name_pos = torch.stack([ds.pos["IO"], ds.pos["S1"], ds.pos["S2"]], 1).tolist()
    for l, h in heads:
        ref = hand_copy_score(model.original_model, ds.tokens, name_pos, l, h, 4,
                              sign=-1.0 if negative else 1.0)
        assert abs(got[l, h].item() - ref) <= 1 / (3 * len(ds)) + 1e-9  # at most one tie flips


# ----------------------------------------------------------------------------- attention


def test_attention_at_picks_per_prompt_cells():
    pattern = torch.zeros(2, 3, 5, 5)
    pattern[0, :, 4, 1] = torch.tensor([0.1, 0.2, 0.3])
    pattern[1, :, 3, 2] = torch.tensor([0.4, 0.5, 0.6])
    got = scores.attention_at(pattern, torch.tensor([4, 3]), torch.tensor([1, 2]))
    assert torch.equal(got, torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]))


def test_name_attention_matches_loop():
    model = tm.random_model()
    ds, _ = tm.datasets(10, seed=1)
    got = scores.name_attention(model, ds, batch_size=4)
    _, cache = model.run_with_cache(ds.tokens)
    for name in ("IO", "S1", "S2"):
        for l in range(3):
            for h in range(4):
                ref = sum(cache[f"blocks.{l}.attn.hook_pattern"][i, h, ds.pos["END"][i], ds.pos[name][i]]
                          for i in range(len(ds))) / len(ds)
                assert abs(got[name][l, h].item() - ref.item()) < 1e-6


# ----------------------------------------------------------------------------- repeated tokens


def test_repeated_random_tokens():
    t = scores.repeated_random_tokens(4, 7, seed=1, prepend_bos=True)
    assert t.shape == (4, 15)
    assert torch.all(t[:, 0] == 50256) and not torch.any(t[:, 1:] == 50256)
    assert torch.equal(t[:, 1:8], t[:, 8:])
    assert all(len(set(row[1:8].tolist())) == 7 for row in t)
    assert torch.equal(t, scores.repeated_random_tokens(4, 7, seed=1, prepend_bos=True))


@pytest.mark.parametrize("offset", [0, 1])
def test_pattern_scores_on_hand_built_patterns(offset):
    L, n = 5, 3
    T = offset + 2 * L
    pattern = torch.zeros(n, 4, T, T)
    for i in range(T):
        pattern[:, :, i, : i + 1] = 1.0 / (i + 1)  # uniform causal default
    for i in range(offset + L, T):  # second copy: one-hot rows
        for head, target in ((0, i - L + 1), (1, i - L), (2, i - 1)):
            pattern[:, head, i] = 0
            pattern[:, head, i, target] = 1
    got = scores.pattern_scores(pattern, L, offset)
    assert torch.allclose(got["induction"][:3], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(got["duplicate"][:3], torch.tensor([0, 1.0, 0]))
    assert torch.allclose(got["previous"][:3], torch.tensor([0, 0, 1.0]))
    q = torch.arange(offset + L, T).float()  # head 3 uniform: 1 / (i + 1) on every target
    assert torch.allclose(got["induction"][3], (1 / (q + 1)).mean())


def test_repeated_token_scores_match_loop():
    model = tm.random_model()
    got = scores.repeated_token_scores(model, n_seq=6, seq_len=5, seed=2, batch_size=4)
    tokens = scores.repeated_random_tokens(6, 5, seed=2)
    _, cache = model.run_with_cache(tokens)
    for l in range(3):
        p = cache[f"blocks.{l}.attn.hook_pattern"]
        for h in range(4):
            ind = torch.stack([p[:, h, i, i - 4] for i in range(5, 10)]).mean()
            dup = torch.stack([p[:, h, i, i - 5] for i in range(5, 10)]).mean()
            prev = torch.stack([p[:, h, i, i - 1] for i in range(5, 10)]).mean()
            assert abs(got["induction"][l, h] - ind) < 1e-6
            assert abs(got["duplicate"][l, h] - dup) < 1e-6
            assert abs(got["previous"][l, h] - prev) < 1e-6


# ----------------------------------------------------------------------------- attention vs projection


def test_pearson():
    x = torch.tensor([[1.0, 2, 3, 4], [1, 2, 3, 4]])
    y = torch.tensor([[3.0, 5, 7, 9], [4, 3, 2, 1]])
    assert torch.allclose(scores.pearson(x, y), torch.tensor([1.0, -1.0]))


def test_attention_projection_matches_loop():
    model = tm.random_model()
    ds, _ = tm.datasets(8, seed=3)
    heads = [(1, 2), (2, 0)]
    pts = scores.attention_projection(model, ds, heads, batch_size=3)
    s1_only = scores.attention_projection(model, ds, heads, s_position="S1")
    corr = scores.attention_projection_correlation(model, ds, heads)
    _, cache = model.run_with_cache(ds.tokens)
    for l, h in heads:
        attn, proj = [], []
        for i in range(len(ds)):
            e = ds.pos["END"][i]
            write = cache[f"blocks.{l}.attn.hook_z"][i, e, h] @ model.W_O[l, h]
            attn.append(cache[f"blocks.{l}.attn.hook_pattern"][i, h, e, ds.pos["IO"][i]])
            proj.append(write @ model.W_U[:, ds.io_tokens[i]])
            pat = cache[f"blocks.{l}.attn.hook_pattern"][i, h, e]
            # the authors' scatter_attention_and_contribution sums the attention to S1 and S2
            assert abs(pts["attn_S"][l, h, i] - (pat[ds.pos["S1"][i]] + pat[ds.pos["S2"][i]])) < 1e-6
            assert abs(s1_only["attn_S"][l, h, i] - pat[ds.pos["S1"][i]]) < 1e-6  # ARENA's variant
            assert abs(pts["proj_S"][l, h, i] - write @ model.W_U[:, ds.s_tokens[i]]) < 1e-4
        attn, proj = torch.stack(attn), torch.stack(proj)
        assert torch.allclose(pts["attn_IO"][l, h], attn, atol=1e-6)
        assert torch.allclose(pts["proj_IO"][l, h], proj, atol=1e-4)
        r = torch.corrcoef(torch.stack([attn, proj]))[0, 1]
        assert abs(corr["IO"][l, h] - r) < 1e-4
    assert torch.isnan(corr["IO"][0, 0])


def test_copy_score_on_ioi_tiny_matches_raw_weights():
    model = tm.ioi_tiny()
    ds, _ = tm.datasets(8)
    heads = [(model.cfg.n_layers - 1, 0), (1, 3)]
    got = scores.copy_scores(model, ds, heads=heads)
    name_pos = torch.stack([ds.pos["IO"], ds.pos["S1"], ds.pos["S2"]], 1).tolist()
    for l, h in heads:
        ref = hand_copy_score(model.original_model, ds.tokens, name_pos, l, h, model.cfg.n_heads)
        assert abs(got[l, h].item() - ref) <= 1 / (3 * len(ds)) + 1e-9
