"""Chapters 2 and 3: Name Movers, Negative Name Movers, S-Inhibition heads and the
token-vs-position experiment (App. A) - the package code behind them, checked against
independent computations, and the discovered classes on ``ioi-tiny``."""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from ioi_helpers import scores


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- copy scores


def test_copy_score_pair_fast_path_matches_unembedding(monkeypatch):
    """The d_head-space shortcut (LN(v W_O) = v W_O / sigma, both signs in one product) gives
    the numbers of sending each output through ln_final and the unembedding."""
    model = tm.random_model()
    ds, _ = tm.datasets(12, seed=4)
    assert scores._final_ln_is_plain(model)  # compatibility mode folds ln_final's gain and bias
    fast = scores.copy_score_pair(model, ds, batch_size=10)
    monkeypatch.setattr(scores, "_final_ln_is_plain", lambda m: False)
    slow = scores.copy_score_pair(model, ds, batch_size=10)
    for key in ("copy", "negative"):
        assert fast[key].shape == (3, 4) and not torch.isnan(fast[key]).any()
        # at most one near-tie at the top-5 boundary may flip per head
        assert (fast[key] - slow[key]).abs().max() <= 1 / (3 * len(ds)) + 1e-9
    assert torch.equal(scores.copy_scores(model, ds, heads=[(1, 2)], negative=True)[1, 2:3],
                       scores.copy_score_pair(model, ds, heads=[(1, 2)])["negative"][1, 2:3])


# ----------------------------------------------------------------------------- discovery steps

from oracles import path_patch_oracle_sweep  # noqa: E402

from ioi_helpers import ablation, dataset, discovery, metrics, signals  # noqa: E402

N = 12


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path / "cache"))


def tiny_setup(seed: int = 0) -> discovery.Setup:
    """A random 3-layer model; seed 0 prefers the IO on these prompts, seed 1 the subject."""
    return discovery.Setup(tm.random_model(n_layer=3, n_head=4, seed=seed), n_prompts=N, seed=0)


def attention_by_hand(model, ds, dest: str, src: str) -> torch.Tensor:
    _, cache = model.run_with_cache(ds.tokens)
    rows = torch.arange(len(ds))
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][rows, :, ds.pos[dest], ds.pos[src]].mean(0)
                        for l in range(model.cfg.n_layers)])


def test_name_movers_match_the_literal_algorithm_and_their_rule():
    setup = tiny_setup()
    model = setup.model
    threshold = 0.02
    nm, nnm = discovery.name_movers(setup, threshold=threshold)
    senders = [(l, h) for l in range(3) for h in range(4)]
    ref = path_patch_oracle_sweep(model, setup.ioi, setup.abc, [[s] for s in senders], receivers="logits")
    clean = metrics.logit_diff(metrics.end_logits(model, setup.ioi), setup.ioi).mean().item()
    assert clean > 0 and abs(nm.clean - clean) < 1e-4
    rel = (ref - clean) / abs(clean)
    torch.testing.assert_close(torch.tensor([float(nm.effect[s]) for s in senders]), rel, atol=1e-4, rtol=1e-3)
    to_io = attention_by_hand(model, setup.ioi, "END", "IO")
    to_s = attention_by_hand(model, setup.ioi, "END", "S1") + attention_by_hand(model, setup.ioi, "END", "S2")
    want_nm = [s for s, r in zip(senders, rel) if r <= -threshold and to_io[s] > to_s[s]]
    want_nnm = [s for s, r in zip(senders, rel) if r >= threshold and to_io[s] > to_s[s]]
    assert nm.heads == want_nm and nnm.heads == want_nnm
    assert nm.heads or nnm.heads  # non-vacuous on this model
    assert set(nm.table.loc[nm.table["selected"], "head"]) == {f"{l}.{h}" for l, h in want_nm}
    assert nm.kept_at == nnm.kept_at == "END"


def test_name_movers_select_nothing_when_the_model_prefers_the_subject():
    setup = tiny_setup(seed=1)
    nm, nnm = discovery.name_movers(setup, threshold=1e-9)
    assert nm.clean < 0 and nm.heads == [] and nnm.heads == []
    assert not setup.does_task and "applied only when the model does the task" in nm.rule
    assert (nm.effect.abs() > 0).any()  # the experiment ran; only the rule declined


def test_s_inhibition_matches_the_literal_algorithm_and_its_rule():
    setup = tiny_setup()
    model, movers = setup.model, [(2, 0), (2, 3)]
    threshold = 0.01
    sin = discovery.s_inhibition(setup, movers, threshold=threshold)
    senders = [(l, h) for l in range(2) for h in range(4)]
    ref = path_patch_oracle_sweep(model, setup.ioi, setup.abc, [[s] for s in senders],
                                  receivers=movers, receiver_input="q", position="END")
    rel = (ref - sin.clean) / abs(sin.clean)
    torch.testing.assert_close(torch.tensor([float(sin.effect[s]) for s in senders]), rel, atol=1e-4, rtol=1e-3)
    assert torch.all(sin.effect[2:] == 0)  # the receivers' layer and after cannot reach them
    to_s2 = attention_by_hand(model, setup.ioi, "END", "S2")
    to_io = attention_by_hand(model, setup.ioi, "END", "IO")
    assert sin.heads == [s for s, r in zip(senders, rel) if r <= -threshold and to_s2[s] > to_io[s]]
    empty = discovery.s_inhibition(setup, [])
    assert empty.heads == [] and empty.rule.startswith("not run")


# ----------------------------------------------------------------------------- signals


def hand_patched_logits(model, ds, source, heads, watch=()):
    """Prompt by prompt: the source's hook_z at END written into the run of ds, with hooks on
    the full forward pass; returns END logits and the watched heads' END -> IO attention."""
    logits, att = [], []
    for i in range(len(ds)):
        n, e = int(ds.lengths[i]), int(ds.pos["END"][i])
        _, cache = model.run_with_cache(source.tokens[i:i + 1, :n])
        saved = {}

        def patch(z, hook):
            l = int(hook.name.split(".")[1])
            z = z.clone()
            for hl, h in heads:
                if hl == l:
                    z[0, e, h] = cache[hook.name][0, e, h]
            return z

        def save(p, hook):
            saved[hook.name] = p

        hooks = [(f"blocks.{l}.attn.hook_z", patch) for l in range(model.cfg.n_layers)]
        hooks += [(f"blocks.{l}.attn.hook_pattern", save) for l in range(model.cfg.n_layers)]
        with torch.no_grad():
            out = model.run_with_hooks(ds.tokens[i:i + 1, :n], fwd_hooks=hooks)
        logits.append(out[0, e])
        att.append(torch.stack([saved[f"blocks.{l}.attn.hook_pattern"][0, h, e, ds.pos["IO"][i]]
                                for l, h in watch]) if watch else torch.zeros(0))
    return torch.stack(logits), torch.stack(att)


def test_patch_outputs_matches_a_hand_written_hooked_run():
    model = tm.random_model()
    ds, abc = tm.datasets(N, seed=5)
    heads, watch = [(0, 1), (1, 2), (1, 3)], [(1, 0), (2, 1)]
    got, att = signals.patch_outputs(model, ds, abc, heads, watch=watch, batch_size=5)
    ref, ref_att = hand_patched_logits(model, ds, abc, heads, watch)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(att["IO"], ref_att, atol=1e-5, rtol=1e-4)
    assert att["S1"].shape == (N, 2)
    clean = metrics.end_logits(model, ds)
    assert (got - clean).abs().max() > 1e-2  # the patch does something
    # no heads, or the prompts' own values: the clean run
    for same in (signals.patch_outputs(model, ds, abc, [])[0], signals.patch_outputs(model, ds, ds, heads)[0]):
        torch.testing.assert_close(same, clean, atol=1e-4, rtol=1e-4)


def test_patch_outputs_is_the_knockout_engine_with_source_values():
    """The same intervention through ablation.run_ablated: a mask at END, values = source's z."""
    model = tm.random_model()
    ds, abc = tm.datasets(N, seed=6)
    heads = [(1, 1), (2, 0)]
    values = ablation.head_outputs(model, abc)
    mask = ablation.knockout_mask(model, ds, {h: ["END"] for h in heads})
    torch.testing.assert_close(signals.patch_outputs(model, ds, abc, heads)[0],
                               ablation.run_ablated(model, ds, mask, values), atol=1e-4, rtol=1e-4)


def test_attention_shift_clean_rows_are_the_models_attention():
    model = tm.random_model()
    ds, abc = tm.datasets(N, seed=7)
    movers = [(2, 0), (2, 2)]
    shift = signals.attention_shift(model, ds, abc, [(1, 0), (1, 3)], movers)
    assert list(shift["run"]) == ["clean", "clean", "patched", "patched"]
    clean = shift[shift["run"] == "clean"].set_index("head")
    for dest in ("IO", "S1", "S2"):
        by_hand = attention_by_hand(model, ds, "END", dest)
        for l, h in movers:
            assert abs(clean.loc[f"{l}.{h}", f"attn END->{dest}"] - float(by_hand[l, h])) < 1e-5
    ld = metrics.logit_diff(metrics.end_logits(model, ds), ds).mean().item()
    assert abs(clean["logit diff"].iloc[0] - ld) < 1e-4
    assert (shift[shift["run"] == "patched"]["attn END->IO"].values
            != clean["attn END->IO"].values).any()


def test_token_position_rows_and_baseline():
    model = tm.random_model()
    ds, _ = tm.datasets(N, seed=8)
    heads = [(1, 0), (1, 2)]
    tp = signals.token_position(model, ds, heads)
    assert [(t, p) for t, p in zip(tp["token"], tp["position"])] == [
        (t, p) for t in signals.TOKENS for p in signals.POSITION_SIGNALS]
    ld = metrics.logit_diff(metrics.end_logits(model, ds), ds)
    row = tp[(tp["token"] == "orig") & (tp["position"] == "orig")].iloc[0]
    assert abs(row["logit diff"] - ld.mean().item()) < 1e-4  # patching a run's own values: nothing
    # each cell is the patch from its variant, computed independently
    variant = dataset.signal_variant(ds, "inverted", "inverted")
    ref, _ = hand_patched_logits(model, ds, variant, heads)
    cell = tp[(tp["token"] == "inverted") & (tp["position"] == "inverted")]["logit diff"].iloc[0]
    assert abs(cell - metrics.logit_diff(ref, ds).mean().item()) < 1e-4
    assert tp["logit diff"].nunique() == 6  # every variant changes something


# ----------------------------------------------------------------------------- ioi-tiny


@pytest.fixture(scope="module")
def tiny():
    model = tm.ioi_tiny()
    return discovery.Setup(model, n_prompts=100, seed=0)


def _knockout_change(setup, heads) -> float:
    """Mean logit diff with ``heads`` mean-ablated at END (p_ABC means per template group), the
    position where the chapters' classes act, minus without."""
    values = ablation.ablation_values(setup.model, setup.ioi, setup.abc)
    base = ablation.model_logit_diff(setup.model, setup.ioi, values).mean()
    mask = ablation.knockout_mask(setup.model, setup.ioi, {h: ["END"] for h in heads})
    return float(ablation.ablated_logit_diff(setup.model, setup.ioi, mask, values).mean() - base)


def _attends_io_by_hand(model, ds) -> list:
    """Heads whose mean attention END->IO exceeds END->S1 + END->S2 (plain run_with_cache)."""
    _, cache = model.run_with_cache(ds.tokens)
    rows = torch.arange(len(ds))

    def att(l, h, src):
        return cache[f"blocks.{l}.attn.hook_pattern"][rows, h, ds.pos["END"], ds.pos[src]].mean().item()

    return [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)
            if att(l, h, "IO") > att(l, h, "S1") + att(l, h, "S2")]


def _effects_by_hand(setup, heads) -> dict:
    """Each head's path-patching effect on the logits (the literal algorithm, oracles.py), a
    fraction of the clean logit diff."""
    model, ds = setup.model, setup.ioi
    clean = metrics.logit_diff(model(ds.tokens), ds).mean().item()
    patched = path_patch_oracle_sweep(model, ds, setup.abc, [[h] for h in heads], receivers="logits")
    return {h: (v - clean) / abs(clean) for h, v in zip(heads, patched.tolist())}


def test_ioi_tiny_name_movers_matter(tiny):
    nm, nnm = discovery.name_movers(tiny)
    assert tiny.does_task and nm.heads, "ioi-tiny does the task, so it should have Name Movers"
    assert _knockout_change(tiny, nm.heads) < 0  # chapter 2: they carry the IO to the logits
    cs = scores.copy_score_pair(tiny.model, tiny.ioi[:30])
    assert all(cs["copy"][h] > cs["copy"].mean() for h in nm.heads)  # copy more than the average head
    # a known absence: ioi-tiny has no Negative Name Mover; by hand, no head that attends to the
    # IO raises the logit diff by the threshold when path-patched
    assert nnm.heads == []
    rises = _effects_by_hand(tiny, _attends_io_by_hand(tiny.model, tiny.ioi))
    assert rises and max(rises.values()) < tiny.name_mover_threshold, rises


def test_ioi_tiny_name_mover_is_not_stable_across_prompt_samples(tiny, tmp_path, monkeypatch):
    """A known absence, asserted as one (measured): ioi-tiny's only Name Mover, 0.5, passes the
    5% cut on the seed-0 sample but on the seed-1 sample the rule finds none; chapter 2's
    robustness table shows it. Each verdict is confirmed by hand (attention from a plain
    run_with_cache, the drop from the literal path-patching algorithm)."""
    nm, _ = discovery.name_movers(tiny)
    assert nm.heads == [(0, 5)]
    assert (0, 5) in _attends_io_by_hand(tiny.model, tiny.ioi)
    assert _effects_by_hand(tiny, [(0, 5)])[(0, 5)] <= -tiny.name_mover_threshold
    # a second, independent prompt sample (another seed), recomputed in an empty cache
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path / "again"))
    other = discovery.Setup(tiny.model, n_prompts=100, seed=1)
    assert other.ioi.texts != tiny.ioi.texts  # really other prompts, not a rerun
    again, _ = discovery.name_movers(other)
    assert again.heads == []
    effects = _effects_by_hand(other, _attends_io_by_hand(other.model, other.ioi))
    assert not [h for h, e in effects.items() if e <= -other.name_mover_threshold], effects


@pytest.fixture(scope="module")
def planted():
    return discovery.Setup(tm.ioi_planted(), n_prompts=100, seed=0)


def test_s_inhibition_on_ioi_planted_is_stable_and_matters(planted, tmp_path, monkeypatch):
    """Chapter 3's main path on a model that has the class: found, stable on another prompt
    sample (recomputed in an empty cache), knocking it out lowers the logit diff, and patching it
    from p_ABC moves the Name Movers' attention off the IO (Fig. 4c)."""
    nm, _ = discovery.name_movers(planted)
    sin = discovery.s_inhibition(planted, nm.heads)
    assert nm.heads and sin.heads, "ioi-planted has Name Movers and S-Inhibition heads"
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path / "again"))
    other = discovery.Setup(planted.model, n_prompts=100, seed=1)
    assert other.ioi.texts != planted.ioi.texts  # really other prompts, not a rerun
    assert discovery.s_inhibition(other, nm.heads).heads == sin.heads
    assert _knockout_change(planted, sin.heads) < 0  # chapter 3: they steer the Name Movers
    shift = signals.attention_shift(planted.model, planted.ioi, planted.abc, sin.heads, nm.heads)
    mean = shift.groupby("run")["attn END->IO"].mean()
    assert mean["patched"] < mean["clean"]  # Fig. 4c: attention leaves the IO
