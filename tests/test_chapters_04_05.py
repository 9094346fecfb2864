"""Chapters 4 and 5: the discovery steps for Induction / Duplicate Token and Previous Token
heads, their checks (repeated random tokens, App. A's share), and the exploratory fallback.

Independent references: the literal path-patching algorithm (``oracles``), attention and
head outputs read with plain TransformerLens hooks, and tokenizing the variants' texts."""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from oracles import path_patch_oracle_sweep
from ioi_helpers import ablation, dataset, discovery, metrics, models

N = 12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path / "cache"))


def tiny_setup(n_layer: int = 3, seed: int = 0) -> discovery.Setup:
    model = tm.random_model(n_layer=n_layer, n_head=4, seed=seed)
    return discovery.Setup(model, n_prompts=N, seed=seed)


def attention_by_hand(model, ds, dest: str, src: str) -> torch.Tensor:
    """Mean attention dest -> src per head, from a plain run_with_cache."""
    _, cache = model.run_with_cache(ds.tokens)
    rows = torch.arange(len(ds))
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][rows, :, ds.pos[dest], ds.pos[src]].mean(0)
                        for l in range(model.cfg.n_layers)])


# ----------------------------------------------------------------------------- App. A variants


def authors_flip(words: list[str], io: str, s: str, flip: tuple[str, str], rand: str | None = None):
    """The authors' ``gen_flipped_prompts`` (easy_transformer/ioi_dataset.py) on a prompt's
    words (text with the answer, split on spaces), with ``rand`` as its random draw. Returns
    (words, io, s) as the authors' prompt dict holds them afterwards."""
    t = list(words)
    if flip == ("S2", "IO"):
        t[len(t) - t[::-1].index(s) - 1] = io
        return t, s, io  # the authors swap the IO / S labels here
    if flip == ("IO", "RAND"):
        t[t.index(io)] = rand
        t[t.index(io)] = rand  # the IO occurs twice: its slot and the answer
        return t, rand, s
    if flip == ("S", "RAND"):
        t[t.index(s)] = rand
        t[len(t) - t[::-1].index(s) - 1] = rand
        return t, io, rand
    if flip == ("IO", "S1"):
        i, j = t.index(io), t.index(s)
        t[i], t[j] = t[j], t[i]
        return t, io, s
    raise ValueError(flip)


# experiments.py (repository root), "Token and position signal results": the flips that build
# each of signal_specific_datasets[(token, position)] from ioi_dataset, in order.
AUTHORS_SIGNAL_FLIPS = {
    ("orig", "orig"): [],
    ("random", "orig"): [("IO", "RAND"), ("S", "RAND")],
    ("random", "inverted"): [("IO", "RAND"), ("S", "RAND"), ("IO", "S1")],
    ("inverted", "inverted"): [("S2", "IO")],
    ("inverted", "orig"): [("S2", "IO"), ("IO", "S1")],
    ("orig", "inverted"): [("IO", "S1")],
}


@pytest.mark.parametrize("token,position", list(dataset.SIGNAL_VARIANTS))
def test_signal_variant_is_the_authors_construction(token, position):
    """Each variant's text equals the authors' flips applied to the clean prompt (with the
    variant's new names as the random draws), and its tokens are that text tokenized."""
    ds, _ = tm.datasets(20, prepend_bos=token == "random")
    var = dataset.signal_variant(ds, token, position)
    tok = models.get_tokenizer()
    assert torch.equal(var.lengths, ds.lengths) and all(torch.equal(var.pos[k], ds.pos[k]) for k in ds.pos)
    assert torch.equal(var.io_tokens, ds.io_tokens) and torch.equal(var.s_tokens, ds.s_tokens)
    for i, (p, q) in enumerate(zip(ds.prompts, var.prompts)):
        draws = iter(())
        if token == "random":  # the authors draw the IO's new name (D) first, then S's (C)
            d = q.slot_names[0] if position == "orig" else q.slot_names[1]
            c = q.slot_names[2]
            draws = iter([d, c])
            assert len({d, c, p.io, p.s}) == 4
        words, io, s = (p.text + " " + p.io).split(" "), p.io, p.s
        for flip in AUTHORS_SIGNAL_FLIPS[(token, position)]:
            words, io, s = authors_flip(words, io, s, flip, next(draws) if flip[1] == "RAND" else None)
        assert " ".join(words[:-1]) == q.text  # the authors' text without its answer
        row = ([tok.bos_token_id] if ds.prepend_bos else []) + tok.encode(q.text, add_special_tokens=False)
        assert var.tokens[i, : len(row)].tolist() == row
    if (token, position) == ("orig", "orig"):
        assert torch.equal(var.tokens, ds.tokens)


def test_signal_variants_mean_what_their_names_say():
    """The token signal is the name at S2; the position signal is where its earlier copy sits.
    The authors' random variants share no name with the clean prompt; "keep-io" keeps the IO."""
    ds, _ = tm.datasets(10)
    for construction in ("code", "keep-io"):
        for (token, position) in dataset.SIGNAL_VARIANTS:
            var = dataset.signal_variant(ds, token, position, construction=construction)
            for p, q in zip(ds.prompts, var.prompts):
                io_slot, s1_slot, s2_slot = q.slot_names
                expected = {"orig": p.s, "inverted": p.io}.get(token)
                assert s2_slot == expected if expected else s2_slot not in (p.io, p.s)
                first = s1_slot if position == "orig" else io_slot  # where S2's earlier copy sits
                assert first == s2_slot and (io_slot if position == "orig" else s1_slot) != s2_slot
                if token == "random":
                    other = io_slot if position == "orig" else s1_slot
                    if construction == "code":
                        assert not {io_slot, s1_slot, s2_slot} & {p.io, p.s}
                    else:
                        assert other == p.io
    assert discovery.signal_variant is dataset.signal_variant  # the old import path still works


# ----------------------------------------------------------------------------- helpers


def test_top_heads_most_negative_first_skipping_and_stopping_at_zero():
    eff = torch.tensor([[0.0, -0.5, 0.2], [-0.1, -0.9, -0.3]])
    assert discovery.top_heads(eff, 2) == [(0, 1), (1, 1)]
    assert discovery.top_heads(eff, 3, exclude=[(1, 1)]) == [(0, 1), (1, 0), (1, 2)]
    assert discovery.top_heads(eff, 10) == [(0, 1), (1, 0), (1, 1), (1, 2)]  # only negatives
    assert discovery.top_heads(torch.zeros(2, 2), 3) == []


def test_repeated_token_check_needs_the_class_score_largest_and_above_the_floor():
    rep = {"induction": torch.tensor([[0.5, 0.05, 0.3]]),
           "duplicate": torch.tensor([[0.1, 0.02, 0.4]]),
           "previous": torch.tensor([[0.2, 0.01, 0.1]])}
    t = discovery.repeated_token_check([(0, 2), (0, 0), (0, 1)], rep, "induction", 0.1)
    assert t["head"].tolist() == ["0.0", "0.1", "0.2"]
    assert t["confirmed"].tolist() == [True, False, False]  # 0.1: below the floor; 0.2: dup wins
    assert t.loc[0, "duplicate score"] == pytest.approx(0.1)
    assert discovery.repeated_token_check([], rep, "previous").empty
    with pytest.raises(ValueError):
        discovery.repeated_token_check([(0, 0)], rep, "copy")


# ----------------------------------------------------------------------------- the two steps


@pytest.mark.parametrize("receiver_input", [None, "kv"])
def test_induction_and_duplicate_matches_the_literal_algorithm_and_its_rule(receiver_input):
    """Default: the S-Inhibition heads' values at S2 (the authors' code); "kv": the paper's text."""
    setup = tiny_setup()
    model, receivers = setup.model, [(2, 0), (2, 3)]
    kw = {} if receiver_input is None else {"receiver_input": receiver_input}
    ind, dup = discovery.induction_and_duplicate(setup, receivers, threshold=1e-6, **kw)
    senders = [(l, h) for l in range(2) for h in range(4)]
    ref = path_patch_oracle_sweep(model, setup.ioi, setup.abc, [[s] for s in senders],
                                  receivers=receivers, receiver_input=receiver_input or "v",
                                  position="S2")
    clean = metrics.logit_diff(metrics.end_logits(model, setup.ioi), setup.ioi).mean().item()
    rel = (ref - clean) / abs(clean)
    got = torch.tensor([float(ind.effect[s]) for s in senders])
    torch.testing.assert_close(got, rel, atol=1e-4, rtol=1e-3)
    assert torch.all(ind.effect[2:] == 0)  # at or after the receivers' layer: cannot reach them
    to_s1p1 = attention_by_hand(model, setup.ioi, "S2", "S1+1")
    to_s1 = attention_by_hand(model, setup.ioi, "S2", "S1")
    want_ind = [s for s, r in zip(senders, rel) if r <= -1e-6 and to_s1p1[s] > to_s1[s]]
    want_dup = [s for s, r in zip(senders, rel) if r <= -1e-6 and to_s1p1[s] <= to_s1[s]]
    assert ind.heads == want_ind and dup.heads == want_dup
    assert ind.heads or dup.heads  # a tiny threshold keeps every head that lowers the logit diff
    assert set(ind.table.loc[ind.table["selected"], "head"]) == {f"{l}.{h}" for l, h in want_ind}
    assert ind.kept_at == dup.kept_at == "S2"


def test_previous_token_matches_the_literal_algorithm_and_its_rule():
    setup = tiny_setup()
    model, receivers = setup.model, [(2, 1)]
    prev = discovery.previous_token(setup, receivers, threshold=1e-6)
    senders = [(l, h) for l in range(2) for h in range(4)]
    ref = path_patch_oracle_sweep(model, setup.ioi, setup.abc, [[s] for s in senders],
                                  receivers=receivers, receiver_input="k", position="S1+1")
    rel = (ref - prev.clean) / abs(prev.clean)
    torch.testing.assert_close(torch.tensor([float(prev.effect[s]) for s in senders]), rel,
                               atol=1e-4, rtol=1e-3)
    # attention S1+1 -> S1 against the largest attention to any other earlier position, by loop
    _, cache = model.run_with_cache(setup.ioi.tokens)
    to_s1, other = torch.zeros(2, 4), torch.zeros(2, 4)
    for l, h in senders:
        for i in range(len(setup.ioi)):
            q = int(setup.ioi.pos["S1+1"][i])
            row = cache[f"blocks.{l}.attn.hook_pattern"][i, h, q]
            to_s1[l, h] += float(row[q - 1]) / len(setup.ioi)
            other[l, h] += max([float(row[k]) for k in range(q - 1)] or [0.0]) / len(setup.ioi)
    assert prev.heads == [s for s, r in zip(senders, rel) if r <= -1e-6 and to_s1[s] > other[s]]
    # BABA prompts put the IO after S1+1: the old rule (S1+1->S1 > S1+1->IO) held for any head
    baba = [i for i, p in enumerate(setup.ioi.prompts) if p.order == "BABA"]
    assert baba and all(int(setup.ioi.pos["IO"][i]) > int(setup.ioi.pos["S1+1"][i]) for i in baba)


def test_steps_without_receivers_say_so_and_return_nothing():
    setup = tiny_setup()
    ind, dup = discovery.induction_and_duplicate(setup, [])
    prev = discovery.previous_token(setup, [])
    for cls in (ind, dup, prev):
        assert cls.heads == [] and cls.rule.startswith("not run") and torch.all(cls.effect == 0)


def test_closest_heads_lists_each_steps_nearest_misses_or_why_it_did_not_run():
    setup = tiny_setup()
    ind, dup = discovery.induction_and_duplicate(setup, [(2, 0)])
    empty = discovery.previous_token(setup, [])
    t = discovery.closest_heads({"Induction": ind, "Previous Token": empty}, ["Induction", "Previous Token"], n=3)
    assert t.columns[:2].tolist() == ["step", "head"]
    got = t[t["step"] == "Induction"]
    want = ind.table.sort_values("effect", kind="stable").head(3)
    assert got["head"].tolist() == want["head"].tolist()
    assert got["effect"].tolist() == want["effect"].tolist()
    last = t[t["step"] == "Previous Token"]
    assert len(last) == 1 and last["note"].iloc[0].startswith("not run")


# ----------------------------------------------------------------------------- exploratory fallback


def _classes_with(setup, **found) -> dict:
    """circuit_classes' dict with chosen heads, reusing the real steps' effects."""
    classes = discovery.circuit_classes(setup)
    out = {}
    for name, cls in classes.items():
        heads = found.get(name.replace(" ", "_").replace("-", "_"), cls.heads)
        out[name] = discovery.HeadClass(cls.name, heads, cls.rule, cls.table, cls.effect,
                                        cls.receivers, cls.clean, cls.corrupted, cls.kept_at)
    return out


def test_receivers_for_uses_a_discovered_class_as_is():
    setup = tiny_setup()
    classes = _classes_with(setup, S_Inhibition=[(1, 2)])
    r = discovery.receivers_for(setup, "S-Inhibition", classes=classes)
    assert r == discovery.Receivers([(1, 2)], False, "the discovered S-Inhibition heads")


def _most_negative_by_hand(model, ds, abc, k, exclude=(), **receivers) -> list:
    """The ``k`` heads whose path patching (the literal algorithm, oracles.py) lowers the logit
    diff most, fewer if fewer lower it, skipping ``exclude``; sorted."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads = [(l, h) for l in range(L) for h in range(H)]
    patched = path_patch_oracle_sweep(model, ds, abc, [[h] for h in heads], **receivers)
    clean = metrics.logit_diff(model(ds.tokens), ds).mean().item()
    ranked = sorted((float(v) - clean, h) for v, h in zip(patched, heads))
    return sorted([h for d, h in ranked if d < 0 and h not in exclude][:k])


def test_receivers_for_falls_back_to_the_previous_steps_top_heads():
    setup = tiny_setup(n_layer=4)
    model, ioi, abc = setup.model, setup.ioi, setup.abc
    classes = _classes_with(setup, Name_Mover=[], S_Inhibition=[], Induction=[])
    movers = discovery.receivers_for(setup, "Name Mover", k=2, classes=classes)
    assert movers.exploratory and "path patching to the logits" in movers.how
    assert movers.heads == _most_negative_by_hand(model, ioi, abc, 2, receivers="logits")
    sinh = discovery.receivers_for(setup, "S-Inhibition", k=2, classes=classes)
    want = _most_negative_by_hand(model, ioi, abc, 2, exclude=movers.heads, receivers=movers.heads,
                                  receiver_input="q", position="END")
    assert sinh.exploratory and sinh.heads == want and len(want) == 2
    ind = discovery.receivers_for(setup, "Induction", k=2, classes=classes)
    want = _most_negative_by_hand(model, ioi, abc, 2, exclude=sinh.heads, receivers=sinh.heads,
                                  receiver_input=discovery.S2_RECEIVER_INPUT, position="S2")
    assert ind.exploratory and ind.heads == want and want
    assert not set(ind.heads) & set(sinh.heads)
    with pytest.raises(ValueError):
        discovery.receivers_for(setup, "Previous Token", classes=classes)


# ----------------------------------------------------------------------------- App. A share


def test_s_inhibition_share_against_hand_computations():
    setup = tiny_setup(n_layer=4)
    model, ioi = setup.model, setup.ioi
    receivers, senders = [(3, 0), (3, 2)], [(0, 1), (1, 3)]
    upstream = [(l, h) for l in range(3) for h in range(4)]
    share = discovery.s_inhibition_share(setup, senders, receivers,
                                         variants=[("orig", "inverted"), ("random", "orig")])
    assert share["variant"].tolist() == ["token orig / position inverted", "token random / position orig", "p_ABC"]
    assert share["changes"].tolist() == ["position", "token", "both"]
    clean = metrics.logit_diff(metrics.end_logits(model, ioi), ioi).mean().item()
    variants = [dataset.signal_variant(ioi, "orig", "inverted"),
                dataset.signal_variant(ioi, "random", "orig"), setup.abc]
    for (_, row), new in zip(share.iterrows(), variants):
        ref = path_patch_oracle_sweep(model, ioi, new, [senders, upstream], receivers=receivers,
                                      receiver_input="v", position="S2")  # values, as the authors
        assert row["clean"] == pytest.approx(clean, abs=1e-4)
        assert row["via senders"] == pytest.approx(float(ref[0]) - clean, abs=1e-4)
        assert row["via all heads"] == pytest.approx(float(ref[1]) - clean, abs=1e-4)
        # total: the receivers' outputs at END taken from the variant, by hand with hooks
        _, cache = model.run_with_cache(new.tokens)
        rows, end = torch.arange(len(ioi)), ioi.pos["END"]

        def patch(z, hook):
            l = int(hook.name.split(".")[1])
            z = z.clone()
            for rl, rh in receivers:
                if rl == l:
                    z[rows, end, rh] = cache[hook.name][rows, end, rh]
            return z

        hooks = [(f"blocks.{l}.attn.hook_z", patch) for l in {l for l, _ in receivers}]
        logits = model.run_with_hooks(ioi.tokens, fwd_hooks=hooks)
        total = metrics.logit_diff(metrics.at_end(logits, ioi), ioi).mean().item() - clean
        assert row["total"] == pytest.approx(total, abs=1e-4)
        assert row["share"] == pytest.approx(row["via senders"] / row["total"], rel=1e-6)
        assert row["share of heads"] == pytest.approx(row["via senders"] / row["via all heads"], rel=1e-6)


def test_share_of_heads_is_one_when_the_senders_are_all_upstream_heads():
    setup = tiny_setup()
    receivers = [(2, 1)]
    upstream = [(l, h) for l in range(2) for h in range(4)]
    share = discovery.s_inhibition_share(setup, upstream, receivers, variants=[("inverted", "inverted")])
    assert share["share of heads"].tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        discovery.s_inhibition_share(setup, [], receivers)


# ----------------------------------------------------------------------------- ioi-planted


@pytest.fixture(scope="module")
def planted_classes(tmp_path_factory):
    """ioi-planted (the paper's classes in known heads), so chapters 4-5's main paths run."""
    mp = pytest.MonkeyPatch()  # a cache of this module's own: computed here, never read back
    mp.setenv(discovery.CACHE_ENV_VAR, str(tmp_path_factory.mktemp("cache-04-05")))
    model = tm.ioi_planted()
    setup = discovery.Setup(model, n_prompts=100, seed=0)
    yield setup, discovery.circuit_classes(setup)
    mp.undo()


def _knockout_change(setup, heads) -> float:
    values = ablation.ablation_values(setup.model, setup.ioi, setup.abc)
    base = ablation.model_logit_diff(setup.model, setup.ioi, values).mean()
    return float(ablation.model_logit_diff(setup.model, setup.ioi, values, removed=heads).mean() - base)


def test_induction_and_duplicate_on_ioi_planted_are_stable_and_matter(planted_classes):
    setup, classes = planted_classes
    receivers = classes["S-Inhibition"].heads
    assert receivers, "ioi-planted has S-Inhibition heads"
    ind, dup = classes["Induction"], classes["Duplicate Token"]
    found = ind.heads + dup.heads
    assert ind.heads and dup.heads, "S-Inhibition heads exist but no Induction / Duplicate Token head was found"
    # stable on a second, independent prompt sample (not a rerun: other seed, empty cache)
    again = discovery.induction_and_duplicate(discovery.Setup(setup.model, n_prompts=100, seed=1), receivers)
    assert (again[0].heads, again[1].heads) == (ind.heads, dup.heads)
    assert _knockout_change(setup, found) < 0  # the chapter's claim: knocking them out lowers it


def test_previous_token_on_ioi_planted_is_stable_and_matters(planted_classes):
    setup, classes = planted_classes
    assert classes["Induction"].heads, "ioi-planted has Induction heads"
    prev = classes["Previous Token"]
    assert prev.heads, "Induction heads exist but no Previous Token head was found"
    again = discovery.previous_token(discovery.Setup(setup.model, n_prompts=100, seed=1),  # other sample
                                     classes["Induction"].heads)
    assert again.heads == prev.heads
    assert _knockout_change(setup, prev.heads) < 0
