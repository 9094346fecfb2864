"""The IOI prompt distribution (p_IOI), its corrupted twin p_ABC, and the adversarial variants.

Data (names, places, objects, the 15 BABA templates and their ABBA twins) are those published
with the paper's code, bundled in ``data/ioi-prompt-data.json``.

Conventions, as in the paper:

* ``[A]`` is always the indirect object (IO) and ``[B]`` the subject (S).
* BABA templates open with "[B] and [A]"; ABBA templates with "[A] and [B]".
* The prompt stops before the final name: the model must predict `` IO`` at END.
* Positions: ``IO`` (the IO name), ``S1`` (first S), ``S1+1`` (the token after S1), ``S2``
  (second S), ``END`` (the last prompt token). They are per prompt: prompts from different
  templates have different lengths and are right-padded.
* No BOS by default (the authors did not prepend ``<|endoftext|>``); ``prepend_bos=True``
  shifts every position by one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

DATA_FILE = Path(__file__).parent / "data" / "ioi-prompt-data.json"
POSITIONS = ("IO", "S1", "S1+1", "S2", "END")
Order = Literal["ABBA", "BABA"]
TEMPLATE_SETS = ("mixed", "all", "baba", "abba")


@lru_cache(maxsize=1)
def prompt_data() -> dict:
    """Names, places, objects, templates and adversarial sentences, as published."""
    return json.loads(DATA_FILE.read_text())


@dataclass(frozen=True)
class Template:
    """One template: its order, its index in the paper's list (0-based) and its text."""

    order: Order
    index: int
    text: str

    @property
    def group(self) -> str:
        """The template group id, e.g. ``"BABA3"``: means for ablation are taken per group."""
        return f"{self.order}{self.index}"


def templates(which: str | Sequence[Template] = "mixed") -> list[Template]:
    """The template list for a named set.

    ``"mixed"``: BABA templates 1-7 and ABBA templates 1-7 (14 groups), what the authors' code
    used. ``"all"``: all 15 of each order (30 groups), what the paper's text describes.
    ``"baba"`` / ``"abba"``: all 15 of one order.
    """
    if not isinstance(which, str):
        out = list(which)
        if not out or not all(isinstance(t, Template) for t in out):
            raise ValueError("a custom template set must be a non-empty list of Template")
        return out
    data = prompt_data()
    baba = [Template("BABA", i, t) for i, t in enumerate(data["baba_templates"])]
    abba = [Template("ABBA", i, t) for i, t in enumerate(data["abba_templates"])]
    if which == "mixed":
        return baba[:7] + abba[:7]
    if which == "all":
        return baba + abba
    if which == "baba":
        return baba
    if which == "abba":
        return abba
    raise ValueError(f"unknown template set {which!r}; choose one of {TEMPLATE_SETS}")


@dataclass(frozen=True)
class IOIPrompt:
    """One prompt, with everything needed to rebuild or corrupt it."""

    text: str  # the prompt, without the answer
    template: Template
    io: str  # the indirect object's name (no leading space)
    s: str  # the subject's name
    place: str
    obj: str
    # names written into the slots IO, S1, S2 (differ from io/s only in p_ABC)
    slot_names: tuple[str, str, str] = ()

    @property
    def order(self) -> Order:
        return self.template.order

    @property
    def group(self) -> str:
        return self.template.group


def fill(template: Template, io: str, s1: str, s2: str, place: str, obj: str) -> str:
    """The prompt text of a template with its slots filled, answer removed.

    ``io`` fills [A] (once, in the first clause), ``s1``/``s2`` fill the first/second [B].
    """
    text = template.text
    cut = text.rindex("[A]")
    body = text[:cut].rstrip()
    b_first = body.index("[B]")
    b_second = body.index("[B]", b_first + 3)
    body = body[:b_second] + s2 + body[b_second + 3 :]
    body = body[:b_first] + s1 + body[b_first + 3 :]
    return body.replace("[A]", io).replace("[PLACE]", place).replace("[OBJECT]", obj)


def single_token_words(tokenizer, words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split words into those that are one token with a leading space and the rest."""
    keep, drop = [], []
    for w in words:
        (keep if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1 else drop).append(w)
    return keep, drop


@dataclass
class IOIDataset:
    """Tokenized prompts with per-prompt name positions.

    ``tokens`` are right-padded with ``<|endoftext|>``; ``pos[name]`` holds the index of
    position ``name`` (one of :data:`POSITIONS`) in each prompt. ``io_tokens`` and ``s_tokens``
    are the answer tokens compared at END (IO and S of the *clean* prompt, also in p_ABC,
    where they need not appear in the text).
    """

    prompts: list[IOIPrompt]
    tokens: Int[Tensor, "batch seq"]
    lengths: Int[Tensor, "batch"]
    io_tokens: Int[Tensor, "batch"]
    s_tokens: Int[Tensor, "batch"]
    pos: dict[str, Int[Tensor, "batch"]]
    prepend_bos: bool
    seed: int
    kind: str = "IOI"  # "IOI", "ABC", "adversarial-IO", "adversarial-S"
    dropped: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def groups(self) -> list[str]:
        return [p.group for p in self.prompts]

    @property
    def group_ids(self) -> Int[Tensor, "batch"]:
        """Integer id of each prompt's template group (order of first appearance)."""
        ids: dict[str, int] = {}
        return torch.tensor([ids.setdefault(g, len(ids)) for g in self.groups])

    @property
    def orders(self) -> list[str]:
        return [p.order for p in self.prompts]

    @property
    def end(self) -> Int[Tensor, "batch"]:
        return self.pos["END"]

    def subset(self, index: Sequence[int] | slice) -> "IOIDataset":
        idx = list(range(len(self)))[index] if isinstance(index, slice) else list(index)
        t = torch.tensor(idx, dtype=torch.long)
        max_len = int(self.lengths[t].max()) if idx else 0
        return replace(
            self,
            prompts=[self.prompts[i] for i in idx],
            tokens=self.tokens[t, :max_len],
            lengths=self.lengths[t],
            io_tokens=self.io_tokens[t],
            s_tokens=self.s_tokens[t],
            pos={k: v[t] for k, v in self.pos.items()},
        )

    def __getitem__(self, index: Sequence[int] | slice) -> "IOIDataset":
        return self.subset(index)

    def settings(self) -> dict:
        """The settings a table must state: N, templates, BOS, seed, kind."""
        groups = sorted(set(self.groups))
        return {
            "N": len(self),
            "template groups": len(groups),
            "prepend_bos": self.prepend_bos,
            "seed": self.seed,
            "distribution": self.kind,
        }


def _tokenize(tokenizer, prompts: Sequence[IOIPrompt], prepend_bos: bool, seed: int, kind: str,
              io_names: Sequence[str], s_names: Sequence[str], dropped: dict) -> IOIDataset:
    bos = [tokenizer.bos_token_id] if prepend_bos else []
    rows = [bos + tokenizer.encode(p.text, add_special_tokens=False) for p in prompts]
    lengths = torch.tensor([len(r) for r in rows])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    enc = lambda name: tokenizer.encode(" " + name, add_special_tokens=False)[0]  # noqa: E731
    pos = {k: torch.empty(len(rows), dtype=torch.long) for k in POSITIONS}
    for i, (p, r) in enumerate(zip(prompts, rows)):
        a, b1, b2 = (enc(n) for n in p.slot_names)
        pos["IO"][i] = _find(r, a, p, first=True)
        pos["S1"][i] = _find(r, b1, p, first=True)
        pos["S2"][i] = _find(r, b2, p, first=False)  # the last occurrence: the clause before END
        pos["S1+1"][i] = pos["S1"][i] + 1
        pos["END"][i] = len(r) - 1
    return IOIDataset(
        prompts=list(prompts),
        tokens=tokens,
        lengths=lengths,
        io_tokens=torch.tensor([enc(n) for n in io_names]),
        s_tokens=torch.tensor([enc(n) for n in s_names]),
        pos=pos,
        prepend_bos=prepend_bos,
        seed=seed,
        kind=kind,
        dropped=dropped,
    )


def _find(row: list[int], token: int, prompt: IOIPrompt, first: bool) -> int:
    hits = [j for j, t in enumerate(row) if t == token]
    if not hits:
        raise ValueError(f"name token {token} not found in prompt {prompt.text!r}")
    return hits[0] if first else hits[-1]


def _check_positive(n_prompts: int) -> None:
    if not isinstance(n_prompts, int) or isinstance(n_prompts, bool) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive integer, got {n_prompts!r}")


def _vocab(tokenizer, kind: str, given: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Single-token words of one kind: the paper's list filtered, or a user list checked."""
    words = list(given) if given is not None else prompt_data()[kind]
    keep, drop = single_token_words(tokenizer, words)
    if given is not None and drop:
        raise ValueError(
            f"these {kind} are not single GPT-2 tokens with a leading space: {drop}; "
            "every IOI slot must be one token"
        )
    if len(keep) < (3 if kind == "names" else 1):
        raise ValueError(f"too few single-token {kind}: {keep}")
    return keep, drop


def make_ioi_dataset(
    tokenizer,
    n_prompts: int = 100,
    template_set: str | Sequence[Template] = "mixed",
    seed: int = 0,
    prepend_bos: bool = False,
    names: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
    pair_filter: Callable[[str, str], bool] | None = None,
) -> IOIDataset:
    """Sample ``n_prompts`` IOI prompts.

    Each prompt draws a template uniformly from ``template_set``, an ordered pair of distinct
    names (IO, S), a place and an object, from ``random.Random(seed)``. Names, places and
    objects that are not single tokens are dropped from the paper's lists (``dataset.dropped``
    says which); a user-given list with such a word is an error. ``pair_filter(io, s)`` can
    restrict the name pairs (used to hold out combinations when training ``ioi-tiny``).
    """
    _check_positive(n_prompts)
    tmpl = templates(template_set)
    name_list, dn = _vocab(tokenizer, "names", names)
    place_list, dp = _vocab(tokenizer, "places", places)
    object_list, do = _vocab(tokenizer, "objects", objects)
    rng = random.Random(seed)
    prompts = []
    tries = 0
    while len(prompts) < n_prompts:
        tries += 1
        if tries > 100 * n_prompts + 1000:
            raise ValueError("pair_filter rejects (almost) every name pair")
        t = rng.choice(tmpl)
        io, s = rng.sample(name_list, 2)
        place, obj = rng.choice(place_list), rng.choice(object_list)
        if pair_filter is not None and not pair_filter(io, s):
            continue
        text = fill(t, io, s, s, place, obj)
        prompts.append(IOIPrompt(text, t, io, s, place, obj, (io, s, s)))
    dropped = {"names": dn, "places": dp, "objects": do}
    return _tokenize(tokenizer, prompts, prepend_bos, seed, "IOI",
                     [p.io for p in prompts], [p.s for p in prompts], dropped)


def make_abc_dataset(tokenizer, ds: IOIDataset, seed: int | None = None) -> IOIDataset:
    """p_ABC matched to ``ds``: same template, place and object; the IO, S1 and S2 slots get
    three distinct random names, all different from the prompt's IO and S.

    The answer tokens stay those of the clean prompt, so a logit difference on p_ABC measures
    how much the model prefers the clean IO over the clean S without the IOI structure.
    """
    seed = ds.seed + 1_000_003 if seed is None else seed
    rng = random.Random(seed)
    name_list = sorted({n for p in ds.prompts for n in (p.io, p.s)} |
                       set(single_token_words(tokenizer, prompt_data()["names"])[0]))
    prompts = []
    for p in ds.prompts:
        a, b, c = rng.sample([n for n in name_list if n not in (p.io, p.s)], 3)
        text = fill(p.template, a, b, c, p.place, p.obj)
        prompts.append(IOIPrompt(text, p.template, p.io, p.s, p.place, p.obj, (a, b, c)))
    out = _tokenize(tokenizer, prompts, ds.prepend_bos, seed, "ABC",
                    [p.io for p in ds.prompts], [p.s for p in ds.prompts], ds.dropped)
    for k in POSITIONS:  # the slots sit where they sat in the clean prompts
        assert torch.equal(out.pos[k], ds.pos[k]), k
    return out


def sentence_break(template: Template) -> bool:
    """True when a sentence ends between the first clause (IO and S1) and S2 (``"... store.
    [B] gave ..."``, ``"... argument. Afterwards [B] said ..."``): the templates where the
    paper's extra sentence can sit between the first sentence and the S2 clause."""
    text = template.text
    return ". " in text[text.index("[A]"): text.rindex("[B]")]


def adversarial_templates(which: str | Sequence[Template] = "mixed") -> list[Template]:
    """The templates of a set that have a :func:`sentence_break` (8 of the 14 "mixed" groups,
    18 of all 30): the ones :func:`make_adversarial_dataset` is meant for."""
    return [t for t in templates(which) if sentence_break(t)]


# How the adversarial prompts (Sec. 4.4) are built. "code" (default): the authors' advex.py, which
# produced the published 1.23 / 0.36 / 23.4%: `gen_adv(ioi_dataset, model, DOUBLE_ADX_TEMPLATE,
# name="IO")` on N = 500 prompts of the 14 "mixed" templates; each prompt gets one of the 25
# ordered pairs of the five extra sentences (the same sentence twice included), naming the IO
# twice ("Mary had a good day. Mary was tired."), inserted right after the prompt's last "." (its
# last "," when it has no "."; ioi_dataset's word_idx["punct"]). "paper": the paper's example,
# one sentence, put just before the clause that holds S2 (after its last ". ", else its last ", ",
# the rest capitalised), meant for templates with a sentence break (:func:`adversarial_templates`).
ADVERSARIAL_CONSTRUCTIONS = ("code", "paper")


def make_adversarial_dataset(tokenizer, ds: IOIDataset, name: Literal["IO", "S"] = "IO",
                             seed: int | None = None, construction: str = "code") -> IOIDataset:
    """The extra-sentence variant of ``ds`` (Sec. 4.4): text naming IO (``name="IO"``; the
    adversarial case) or S (``name="S"``; the control) inserted before the S2 clause.

    ``construction="code"`` (default; :data:`ADVERSARIAL_CONSTRUCTIONS`): the authors'
    ``advex.py`` ``gen_adv`` with ``DOUBLE_ADX_TEMPLATE``: two of the published
    ``extra_sentences_adversarial`` ("[A] had a good day. [A] was tired."), drawn as an
    ordered pair (repeats allowed), inserted after the last "." of the prompt, or its last ","
    when it has none; nothing is re-capitalised. Use it on the 14 "mixed" templates, N = 500,
    as they did. (Their final advex.py runs the IO case only; the control applies the same
    construction to S.)

    ``construction="paper"``: the paper's example, one sentence ("Then, John and Mary went to
    the store. Mary had a good day. John gave a drink to"), inserted after the first sentence,
    just before the clause that holds S2. Use templates with a :func:`sentence_break`
    (:func:`adversarial_templates`): in the others the S2 clause follows a comma, and the
    sentence is put after that comma with the clause capitalised.

    Positions IO/S1/S1+1/S2 keep their meaning (first IO, first and last S); ``pos["extra"]``
    is the name in the (first) inserted sentence (the second IO, or the middle S), and with
    ``"code"`` ``pos["extra2"]`` the one in the second."""
    if name not in ("IO", "S"):
        raise ValueError(f"name must be 'IO' or 'S', got {name!r}")
    if construction not in ADVERSARIAL_CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {ADVERSARIAL_CONSTRUCTIONS}, got {construction!r}")
    rng = random.Random(ds.seed + 7 if seed is None else seed)
    sentences = prompt_data()["extra_sentences_adversarial"]
    prompts = []
    for p in ds.prompts:
        named = p.io if name == "IO" else p.s
        if construction == "code":
            extra = (rng.choice(sentences) + " " + rng.choice(sentences)).replace("[A]", named)
            text = _insert_after_punct(p.text, extra)
        else:
            extra = rng.choice(sentences).replace("[A]", named)
            text = _insert_sentence(p.text, extra)
        prompts.append(IOIPrompt(text, p.template, p.io, p.s, p.place, p.obj, p.slot_names))
    out = _tokenize(tokenizer, prompts, ds.prepend_bos, ds.seed, f"adversarial-{name}",
                    [p.io for p in ds.prompts], [p.s for p in ds.prompts], ds.dropped)
    named_tok = out.io_tokens if name == "IO" else out.s_tokens
    # the inserted names are the 2nd (and 3rd) occurrences of the token (IO: first clause, extra;
    # S: S1, extra, ..., S2)
    occ = [[j for j, t in enumerate(row.tolist()) if t == int(tok)] for row, tok in zip(out.tokens, named_tok)]
    out.pos["extra"] = torch.tensor([o[1] for o in occ])
    if construction == "code":
        out.pos["extra2"] = torch.tensor([o[2] for o in occ])
    return out


def _insert_after_punct(text: str, extra: str) -> str:
    """advex.py's insertion: ``extra`` right after the last "." of ``text`` (its last "," if
    it has no "."), with a space before it; the rest of the text follows unchanged."""
    cut = text.rfind(".")
    if cut == -1:
        cut = text.rfind(",")
        if cut == -1:
            raise ValueError(f"no '.' or ',' in {text!r}")
    return text[: cut + 1] + " " + extra + text[cut + 1:]


def _insert_sentence(text: str, extra: str) -> str:
    """Insert ``extra`` as its own sentence just before the clause that holds S2 (after the
    last ". " or, failing that, the last ", "; what follows a comma is capitalised)."""
    cut = text.rfind(". ")
    if cut == -1:
        cut = text.rfind(", ")
        if cut == -1:
            raise ValueError(f"cannot find a clause boundary in {text!r}")
        rest = text[cut + 2:]
        return text[: cut + 1] + " " + extra + " " + rest[:1].upper() + rest[1:]
    return text[: cut + 1] + " " + extra + text[cut + 1 :]


def template_table(template_set: str = "all") -> list[dict]:
    """Rows (group, order, index, template) for display."""
    return [
        {"group": t.group, "order": t.order, "template #": t.index + 1, "template": t.text}
        for t in templates(template_set)
    ]


# ----------------------------------------------------------------------------- App. A variants

# The token and position signals of App. A (Fig. 9): the S-Inhibition heads' outputs at END
# are taken from a copy of each prompt whose name slots are rewritten. Keys are (token signal,
# position signal); values the names written into the slots (IO, S1, S2), with A = the IO's
# name, B = the subject's, C and D two new names (C != D).
#
# "code" (the default) is the authors' construction, which produced the published Fig. 9
# numbers: Easy-Transformer `experiments.py` (repository root), section "Token and position
# signal results", `signal_specific_datasets`, built with `IOIDataset.gen_flipped_prompts`
# (`easy_transformer/ioi_dataset.py`):
#   (1, 1)  orig/orig          ioi_dataset                                   -> A B B
#   (0, 1)  random/orig        flip ("IO", "RAND") then ("S", "RAND")         -> D C C
#   (0, -1) random/inverted    (0, 1) then ("IO", "S1") (swap IO and S1)      -> C D C
#   (-1, -1) inverted/inverted flip ("S2", "IO") (S2 := the IO's name)        -> A B A
#   (-1, 1) inverted/orig      (-1, -1) then ("IO", "S1")                     -> B A A
#   (1, -1) orig/inverted      flip ("IO", "S1")                              -> B A B
# The random variants replace the IO's name as well as S's: the "random" token signal carries
# no name of the clean prompt at all.
SIGNAL_VARIANTS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("orig", "orig"): ("A", "B", "B"),
    ("random", "orig"): ("D", "C", "C"),
    ("inverted", "orig"): ("B", "A", "A"),
    ("orig", "inverted"): ("B", "A", "B"),
    ("random", "inverted"): ("C", "D", "C"),
    ("inverted", "inverted"): ("A", "B", "A"),
}

# "keep-io": the construction this book used before it followed the authors' code. The random
# variants keep the IO's name (A C C, C A C); the other four are the same as "code". It is NOT
# the paper's text (App. A does not spell out its prompts' slots; the code does); it is kept
# so a chapter can show how much the IO's replacement moves the two "random" cells.
SIGNAL_VARIANTS_KEEP_IO: dict[tuple[str, str], tuple[str, str, str]] = {
    **SIGNAL_VARIANTS,
    ("random", "orig"): ("A", "C", "C"),
    ("random", "inverted"): ("C", "A", "C"),
}

SIGNAL_CONSTRUCTIONS: dict[str, dict[tuple[str, str], tuple[str, str, str]]] = {
    "code": SIGNAL_VARIANTS, "keep-io": SIGNAL_VARIANTS_KEEP_IO}


def signal_variant(ds: IOIDataset, token: str, position: str, seed: int | None = None,
                   construction: str = "code", tokenizer=None) -> IOIDataset:
    """``ds`` with its name slots rewritten as in :data:`SIGNAL_CONSTRUCTIONS`
    ``[construction]`` (App. A; default: the authors' code, :data:`SIGNAL_VARIANTS`).

    Every token stays at its position (names are single tokens), so the variant pairs with
    ``ds`` for patching; the answers stay the clean IO and S. C and D are drawn per prompt from
    the single-token names: D different from IO and S, C different from IO, S and D (the
    authors' ``gen_flipped_prompts`` draws S's new name without checking it against the new IO;
    a clash is rare and would make a different variant, so we exclude it)."""
    if construction not in SIGNAL_CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {sorted(SIGNAL_CONSTRUCTIONS)}, got {construction!r}")
    slots = SIGNAL_CONSTRUCTIONS[construction][(token, position)]
    if tokenizer is None:
        from .models import get_tokenizer
        tokenizer = get_tokenizer()
    names = single_token_words(tokenizer, prompt_data()["names"])[0]
    rng = random.Random(ds.seed + 2_000_003 if seed is None else seed)
    tokens = ds.tokens.clone()
    prompts = []
    for i, p in enumerate(ds.prompts):
        d = rng.choice([n for n in names if n not in (p.io, p.s)])
        c = rng.choice([n for n in names if n not in (p.io, p.s, d)])
        pick = {"A": p.io, "B": p.s, "C": c, "D": d}
        filled = tuple(pick[s] for s in slots)
        for slot, name in zip(("IO", "S1", "S2"), filled):
            tokens[i, ds.pos[slot][i]] = tokenizer.encode(" " + name, add_special_tokens=False)[0]
        text = fill(p.template, *filled, p.place, p.obj)
        prompts.append(replace(p, text=text, slot_names=filled))
    label = f"token {token} / position {position}" + ("" if construction == "code" else f" ({construction})")
    return replace(ds, prompts=prompts, tokens=tokens, kind=label)
