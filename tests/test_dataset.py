"""The IOI distribution: token ids, positions, orders, p_ABC, seeds, bad inputs."""

import re

import pytest
import torch

from ioi_helpers import dataset
from ioi_helpers.models import get_tokenizer


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def test_gpt2_token_ids_of_known_sentences(tok):
    # ids taken from GPT-2's published vocabulary (encoder.json), not from our code
    assert tok.encode("When Mary and John went to the store, John gave a drink to",
                      add_special_tokens=False) == [2215, 5335, 290, 1757, 1816, 284, 262, 3650, 11,
                                                    1757, 2921, 257, 4144, 284]
    assert tok.encode(" Mary", add_special_tokens=False) == [5335]
    assert tok.encode("Hello world", add_special_tokens=False) == [15496, 995]
    assert tok.bos_token_id == 50256 and tok.eos_token_id == 50256
    assert len(tok) == 50257


def _words(text):
    return re.findall(r"\w+", text)


def test_positions_decode_to_the_right_names(tok):
    for bos in (False, True):
        ds = dataset.make_ioi_dataset(tok, 60, template_set="all", seed=3, prepend_bos=bos)
        for i, p in enumerate(ds.prompts):
            row = ds.tokens[i].tolist()
            dec = lambda k: tok.decode([row[int(ds.pos[k][i])]])  # noqa: E731
            assert dec("IO") == " " + p.io
            assert dec("S1") == " " + p.s and dec("S2") == " " + p.s
            assert ds.pos["S1"][i] < ds.pos["S2"][i] < ds.pos["END"][i]
            assert ds.pos["S1+1"][i] == ds.pos["S1"][i] + 1
            assert ds.pos["END"][i] == ds.lengths[i] - 1
            # END is the last real token; what follows is padding
            assert tok.decode(row[: int(ds.lengths[i])]) == ("<|endoftext|>" if bos else "") + p.text
            # the text stops right before the answer: the template's final [A]
            assert p.template.text.endswith("[A]")
            assert _words(p.text)[-1] == _words(p.template.text)[-2]
            if bos:
                assert row[0] == tok.bos_token_id


def test_abba_and_baba_orders(tok):
    ds = dataset.make_ioi_dataset(tok, 200, seed=0)
    orders = set()
    for i, p in enumerate(ds.prompts):
        first_name = min(ds.pos["IO"][i], ds.pos["S1"][i])
        if p.order == "ABBA":  # IO comes first: "[A] and [B]"
            assert first_name == ds.pos["IO"][i]
        else:
            assert first_name == ds.pos["S1"][i]
        words = p.text.split()
        names_in_order = [w.strip(",.") for w in words if w.strip(",.") in (p.io, p.s)]
        assert names_in_order == ([p.io, p.s, p.s] if p.order == "ABBA" else [p.s, p.io, p.s])
        orders.add(p.order)
    assert orders == {"ABBA", "BABA"}


def test_template_sets():
    assert len(dataset.templates("mixed")) == 14
    assert len(dataset.templates("all")) == 30
    mixed = dataset.templates("mixed")
    assert {t.index for t in mixed} == set(range(7))
    assert sum(t.order == "ABBA" for t in mixed) == 7
    # ABBA twin = BABA with the first [B] and [A] swapped
    for b, a in zip(dataset.templates("baba"), dataset.templates("abba")):
        assert a.text == b.text.replace("[B] and [A]", "[A] and [B]", 1)


def test_mixed_uses_only_first_seven_templates(tok):
    ds = dataset.make_ioi_dataset(tok, 300, seed=1)
    assert {p.template.index for p in ds.prompts} == set(range(7))
    assert len(set(ds.groups)) == 14


def test_abc_keeps_template_place_object_and_uses_three_fresh_names(tok):
    ds = dataset.make_ioi_dataset(tok, 100, template_set="all", seed=5)
    abc = dataset.make_abc_dataset(tok, ds)
    assert abc.kind == "ABC"
    for p, q, i in zip(ds.prompts, abc.prompts, range(len(ds))):
        assert q.template == p.template and q.place == p.place and q.obj == p.obj
        a, b, c = q.slot_names
        assert len({a, b, c}) == 3
        assert not {a, b, c} & {p.io, p.s}
        # the same text once the names are masked
        mask = lambda text, names: " ".join("N" if w.strip(",.") in names else w for w in text.split())  # noqa: E731
        assert mask(q.text, {a, b, c}) == mask(p.text, {p.io, p.s})
        assert abc.lengths[i] == ds.lengths[i]
        row = abc.tokens[i].tolist()
        assert tok.decode([row[int(abc.pos["IO"][i])]]) == " " + a
        assert tok.decode([row[int(abc.pos["S1"][i])]]) == " " + b
        assert tok.decode([row[int(abc.pos["S2"][i])]]) == " " + c
    # answers are the clean ones
    assert torch.equal(abc.io_tokens, ds.io_tokens) and torch.equal(abc.s_tokens, ds.s_tokens)


def test_same_seed_same_dataset_different_seed_differs(tok):
    a = dataset.make_ioi_dataset(tok, 50, seed=11)
    b = dataset.make_ioi_dataset(tok, 50, seed=11)
    c = dataset.make_ioi_dataset(tok, 50, seed=12)
    assert a.texts == b.texts and torch.equal(a.tokens, b.tokens)
    assert a.texts != c.texts
    assert dataset.make_abc_dataset(tok, a).texts == dataset.make_abc_dataset(tok, b).texts


def test_names_are_filtered_to_single_tokens_and_reported(tok):
    ds = dataset.make_ioi_dataset(tok, 10)
    data = dataset.prompt_data()
    n_names = len(data["names"])
    kept = dataset.single_token_words(tok, data["names"])[0]
    assert len(kept) + len(ds.dropped["names"]) == n_names
    for name in kept:
        assert len(tok.encode(" " + name, add_special_tokens=False)) == 1


@pytest.mark.parametrize("construction,n_extra", [("paper", 1), ("code", 2)])
def test_adversarial_variants_add_one_or_two_sentences(tok, construction, n_extra):
    """The paper's text: one sentence naming the name; the authors' advex.py: two."""
    ds = dataset.make_ioi_dataset(tok, 40, seed=2)
    for which, name_of in (("IO", lambda p: p.io), ("S", lambda p: p.s)):
        adv = dataset.make_adversarial_dataset(tok, ds, which, construction=construction)
        for p, q in zip(ds.prompts, adv.prompts):
            extra_words = len(q.text.split()) - len(p.text.split())
            assert extra_words >= 2 * n_extra
            assert sum(w.strip(",.") == name_of(p) for w in q.text.split()) == \
                   sum(w.strip(",.") == name_of(p) for w in p.text.split()) + n_extra
        assert torch.equal(adv.io_tokens, ds.io_tokens)
        for i in range(len(adv)):
            row = adv.tokens[i].tolist()
            assert tok.decode([row[int(adv.pos["S2"][i])]]) == " " + ds.prompts[i].s
            # S2 is the subject of the final clause: no name between S2 and END
            assert adv.pos["S2"][i] > adv.pos["S1"][i]


def test_subset_keeps_rows_aligned(tok):
    ds = dataset.make_ioi_dataset(tok, 30, seed=4)
    sub = ds[[3, 7, 11]]
    assert sub.texts == [ds.texts[i] for i in (3, 7, 11)]
    assert torch.equal(sub.pos["END"], ds.pos["END"][[3, 7, 11]])
    assert sub.tokens.shape[1] == int(sub.lengths.max())


@pytest.mark.parametrize("kwargs, message", [
    ({"n_prompts": 0}, "positive integer"),
    ({"n_prompts": -5}, "positive integer"),
    ({"n_prompts": 2.5}, "positive integer"),
    ({"template_set": "some"}, "unknown template set"),
    ({"names": ["Mary", "John", "Bartholomew", "Xzyqwv"]}, "not single GPT-2 tokens"),
    ({"names": ["Mary", "John"]}, "too few"),
    ({"places": ["Reykjavikstadt"]}, "not single GPT-2 tokens"),
])
def test_bad_inputs_give_clear_errors(tok, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dataset.make_ioi_dataset(tok, **{"n_prompts": 10, **kwargs})


def test_bad_adversarial_name(tok):
    ds = dataset.make_ioi_dataset(tok, 4)
    with pytest.raises(ValueError, match="'IO' or 'S'"):
        dataset.make_adversarial_dataset(tok, ds, "X")
