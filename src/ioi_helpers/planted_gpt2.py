"""``gpt2-planted``: GPT-2 small's exact shape with the paper's 26 heads planted at the paper's
positions, decoys that make every condition of the book's discovery rules matter, and a
heavy-tailed background (issue 20). The offline rehearsal of the published GPT-2 book.

Nothing is trained. The model is a Hugging Face ``GPT2LMHeadModel`` with GPT-2 small's
configuration (12 layers x 12 heads, d_model 768, d_head 64, d_mlp 3072, 1024 positions, the
50257-token vocabulary and tokenizer), so it goes through the same TransformerBridge path as
``gpt2``. The weights are written by formula with the construction of ``ioi-planted``
(:mod:`ioi_helpers.planted`: the same features, the same kinds of head, the same
calibration), with three differences:

* **Where the heads sit.** Every class sits at the paper's heads, read from
  :data:`ioi_helpers.paper.CIRCUIT`; the seed moves everything else (codes, residual basis,
  decoys' and background heads' positions, noise), never the planted positions.
* **Backups spread over layers 9-11.** The Name Movers also write the name they moved into a
  feature of their own (``NMW``) that only the Backup Name Movers read: a backup attends the
  names *not* written there, so when the Name Movers are knocked out at END each backup in
  layers 10-11 takes over, and none is silenced by another backup's output (backups write
  ``OUT`` only). The two paper backups in layer 9 (9.0 and 9.7) sit in the Name Movers' own
  layer and cannot read their output, so no construction can make them react to the
  knockout: they are planted as weak copying heads whose effect stays between the Backup
  rule's 2% and the Name Mover rule's 5%, before and after the knockout. The book's rule (the
  paper's: an effect above 2% once the Name Movers are knocked out) then classes them as
  backups without their taking over; the stand-in appendix shows it.
* **Several occurrences of a name** (chapter 8's adversarial prompts): the Duplicate Token and
  Induction heads prefer the earliest earlier occurrence and the S-Inhibition heads the latest
  flagged name (:data:`FIRST_OCCURRENCE`, :data:`RECENCY`).
* **Decoys and background** (:data:`DECOYS`): for every condition of every discovery rule, at
  least one head that meets the rule's other conditions and fails that one, and a
  heavy-tailed spread of small effects among the other heads.

``model.planted`` holds the truth (class -> heads), ``model.planted_decoys`` the decoys
(name -> head). Calibration (calibrated, not reproduced): the unembedding's gain and the
constant name logit, as for ``ioi-planted``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from . import planted as base

N_LAYERS, N_HEADS, D_MODEL, D_HEAD, D_MLP, N_POSITIONS = 12, 12, 768, 64, 3072, 1024
VOCAB = 50257
P_DIM, T_DIM, PC_DIM, PC_PERIOD, SELF_MOD = base.P_DIM, base.T_DIM, base.PC_DIM, base.PC_PERIOD, base.SELF_MOD
ANCHOR = math.sqrt(D_MODEL)
JUNK_DIM = 8
MLP_HIDDEN_USED = 256  # the MLPs' random part: the rest of the 3072 hidden units are zero
DISTRACTOR_QK, DISTRACTOR_OV, MLP_STD, NOISE_STD = 1.2, 0.02, 0.008, 1e-3

# Which layers a decoy may sit in (inclusive), and what it is a decoy for: the rule condition it
# fails while meeting the rule's other conditions (see the module docstring and DECOY_FOR).
DECOY_LAYERS = {
    "io_low_gain": (11, 11),        # Name Mover attention, small OV
    "s_anti_copier": (10, 11),      # attends S2, writes minus the name: a drop, like a Name Mover
    "s_copier": (10, 11),           # attends S2, copies the name: a rise, like a Negative Name Mover
    "io_position_writer": (8, 8),   # attends the IO from END, writes its position code negated
    "s2_junk": (7, 8),              # S-Inhibition attention, writes nothing the circuit reads
    "flag_writer": (1, 4),          # Duplicate Token attention, writes the flag (S-Inh keys) only
    "prevx_writer": (0, 3),         # previous-token attention, writes what Induction values read
    "weak_prev": (0, 3),            # writes the previous token, attends the first token more
    "prev_junk": (0, 4),            # previous-token attention, writes nothing read
    "dup_junk": (0, 4),             # duplicate-token attention, writes nothing read
    "ind_junk": (5, 6),             # induction attention, writes nothing read
}
DECOY_FOR = {
    "io_low_gain": ["Name Mover: effect", "Negative Name Mover: effect", "Backup Name Mover: effect"],
    "s_anti_copier": ["Name Mover: attention END->IO > S", "Backup Name Mover: attention", "copy score sign"],
    "s_copier": ["Negative Name Mover: attention END->IO > S"],
    "io_position_writer": ["S-Inhibition: attention END->S2 > IO"],
    "s2_junk": ["S-Inhibition: effect"],
    "flag_writer": ["Induction/Duplicate Token: receiver input (values, not keys)"],
    "prevx_writer": ["Previous Token: receiver input (keys, not values)"],
    "weak_prev": ["Previous Token: attention S1+1->S1 > any other"],
    "prev_junk": ["Previous Token: effect", "repeated-token score (previous)"],
    "dup_junk": ["Duplicate Token: effect", "repeated-token score (duplicate)"],
    "ind_junk": ["Induction: effect", "repeated-token score (induction)"],
}
# Decoys whose output the circuit would miss when they are mean-ablated get a partner with the same
# attention and the opposite output: together they write nothing on the clean run, so the model's
# behaviour stays the circuit's (faithfulness), while each alone has the effect its rule
# condition tests (a partner's effect has the opposite sign, so it never meets that rule).
PARTNERED = ("weak_prev", "prevx_writer", "flag_writer", "io_position_writer")
N_BACKGROUND = 14  # uniform-over-names copiers with heavy-tailed gains in +/- pairs, layers 9-11
BACKGROUND_LAYERS = (9, 11)
BACKGROUND_TOP = 0.075  # the largest |gain|; the k-th largest is TOP * RATIO**k (random sign)
BACKGROUND_RATIO = 0.75

# Strengths, strongest head first in the paper's order of each class (paper.CIRCUIT). The
# attention terms are weaker than ioi-planted's: its Name Movers put ~0.93 of their attention on
# the IO, where one upstream head more or less hardly moves them; here they put about the
# paper's 0.59, so every head upstream has a graded, measurable share.
_MOVER = {"name": 3.0, "inhibit": 0.25, "pos": 0.55}
STRENGTH = {
    "Previous Token": {"score": [6.0, 5.0], "gain": [1.0, 0.042]},
    "Duplicate Token": {"score": [9.0, 8.0, 7.5], "gain": [0.4, 0.32, 0.16], "flag": [0.22, 0.17, 0.14],
                        "pos": [0.4, 0.32, 0.16]},
    "Induction": {"score": [8.0, 7.6, 7.3, 7.0], "gain": [0.9, 0.76, 0.6, 0.3],
                  "flag": [0.2, 0.16, 0.14, 0.12], "pos": [0.36, 0.3, 0.26, 0.17]},
    "S-Inhibition": {"flag": [3.2, 3.1, 3.0, 2.9], "name": [2.5] * 4, "gain": [1.0, 0.9, 0.75, 0.36]},
    "Name Mover": {**{k: [v] * 3 for k, v in _MOVER.items()}, "gain": [1.0, 0.7, 0.125]},
    "Negative Name Mover": {**{k: [v] * 2 for k, v in _MOVER.items()}, "gain": [-0.22, -0.12]},
    # the paper's order: 9.0, 9.7 (layer 9: weak copiers), then 10.1 ... 11.9 (take over)
    "Backup Name Mover": {"name": [_MOVER["name"]] * 2 + [7.5, 7.4, 7.3, 7.2, 7.1, 7.0],
                          "inhibit": [_MOVER["inhibit"]] * 2 + [0.6] * 6,
                          "pos": [_MOVER["pos"]] * 2 + [1.0] * 6, "written": [0.0] * 2 + [8.0] * 6,
                          "gain": [0.05, 0.045, 0.18, 0.16, 0.145, 0.13, 0.155, 0.135],
                          # layer 9 attends like the Name Movers; the others wait for the IO to be missing
                          "sink": [4.0] * 2 + [8.5] * 6},
}
# Chapter 8's extra sentences repeat a name two more times. Without these two terms every
# repeat is flagged alike: the Duplicate Token and Induction heads average the position codes of
# all earlier occurrences, and the S-Inhibition heads split their attention over every flagged
# name, so an IO repeated twice is inhibited more than S (logit difference -1.2, S above IO on
# 80%; the paper: 1.23 and 23.4%). With them the Duplicate Token and Induction heads prefer the
# earliest occurrence and the S-Inhibition heads the latest flagged name (S2). RECENCY sets how
# much of the S-Inhibition heads' attention still goes to the repeated IO; measured on model
# seed 0, 500 prompts of data seed 4244 (adversarial logit difference, S above IO; paper band
# 0.93-1.53, 18.4-28.4%): 8.0 -> 1.79, 10%; 6.0 -> 1.22, 17%; 5.5 -> 1.06, 19%; 4.0 -> 0.53,
# 29%. FIRST_OCCURRENCE moves them little (6.0 instead of 8.0: 1.75, 10%). On the IOI prompts
# themselves each name occurs at most twice, so both terms only shift attention between a
# head's target and its sink.
FIRST_OCCURRENCE = 8.0  # score per P_DIM positions against later occurrences (Duplicate Token, Induction)
RECENCY = 5.5  # score per P_DIM positions towards later flagged names (S-Inhibition)
NMW_GAIN = 2.0  # what each Name Mover writes into NMW per unit of attention
SINK = {"Previous Token": 0.0, "Duplicate Token": 6.0, "Induction": 6.0, "S-Inhibition": 4.0,
        "Name Mover": 4.0, "Negative Name Mover": 4.0, "Backup Name Mover": 7.5}
DECOY_STRENGTH = {
    "io_low_gain": {"gain": 0.005},
    "s_anti_copier": {"gain": -0.1},
    "s_copier": {"gain": 0.16},  # outweighs s_anti_copier: S sits above the other names (IO probability)
    "io_position_writer": {"gain": 0.6},
    "s2_junk": {"gain": 0.5},
    "flag_writer": {"score": 8.0, "flag": 0.6},
    "prevx_writer": {"score": 6.0, "gain": 1.0},
    "weak_prev": {"score": 4.0, "sink": 4.6, "gain": 0.6},
    "prev_junk": {"score": 6.0},
    "dup_junk": {"score": 8.0},
    "ind_junk": {"score": 6.0},
}

# What each kind of head reads and writes, by feature, read off _HeadWriter below (the features
# of ioi-planted, planted.WRITES / planted.READS, plus NMW, PREVX and JUNK): the construction's
# own facts, which ioi_helpers.truth turns into the planted edges. A partner decoy ("name~")
# reads and writes what its decoy does. The distractors (random Q, K, V, O reading every feature
# but the anchor) and the MLPs are not listed: nothing in them is written on purpose.

#: ioi-planted's signal features, plus NMW and PREVX (names, so they differ between p_IOI and
#: p_ABC) and JUNK (written from names too, but read by no head listed here).
SIGNAL_FEATURES = base.SIGNAL_FEATURES | {"NMW", "PREVX", "JUNK"}

_PREV_ATTN = {"q": frozenset({"POS"}), "k": frozenset({"POS"})}
_PREV_SINK_ATTN = {**_PREV_ATTN, "q": frozenset({"POS", "anchor"})}  # with a sink
_DUP_ATTN = {"q": frozenset({"TOK", "POS", "anchor"}), "k": frozenset({"TOK", "POS"})}
_IND_ATTN = {"q": frozenset({"TOK", "anchor"}), "k": frozenset({"PREV", "POS"})}
_S2_ATTN = {"q": frozenset({"anchor"}), "k": frozenset({"flag", "isname", "POS"})}
_MOVER_ATTN = {"q": frozenset({"anchor", "SINH", "SPOS"}), "k": frozenset({"isname", "TOK", "POS"})}
_TOK, _ANCHOR_POS = frozenset({"TOK"}), frozenset({"anchor", "POS"})

#: What each sender writes: the embedding, each class's O matrix (the Name Movers also write
#: NMW), each decoy's and the background heads'.
WRITES: dict[str, frozenset[str]] = {
    **base.WRITES,
    "Name Mover": frozenset({"OUT", "NMW"}),
    "io_low_gain": frozenset({"OUT"}), "s_anti_copier": frozenset({"OUT"}),
    "s_copier": frozenset({"OUT"}), "io_position_writer": frozenset({"SPOS"}),
    "s2_junk": frozenset({"JUNK"}), "flag_writer": frozenset({"flag"}),
    "prevx_writer": frozenset({"PREVX"}), "weak_prev": frozenset({"PREV"}),
    "prev_junk": frozenset({"JUNK"}), "dup_junk": frozenset({"JUNK"}), "ind_junk": frozenset({"JUNK"}),
    "background": frozenset({"OUT"}),
}

#: What the q, k and v matrices of each class, decoy and background head read, and the logits.
#: As in ioi-planted except: the Induction values also read PREVX; the Backup Name Movers'
#: queries read NMW, not OUT (those of 9.0 and 9.7, ``written`` 0, read neither; the Name
#: Movers, which write NMW, sit in layers 9-10, so no edge into layer 9 depends on it).
READS: dict[str, dict[str, frozenset[str]]] = {
    **base.READS,
    "Induction": {**base.READS["Induction"], "v": base.READS["Induction"]["v"] | {"PREVX"}},
    "Backup Name Mover": {**base.READS["Backup Name Mover"],
                          "q": _MOVER_ATTN["q"] | {"NMW"}},
    "io_low_gain": {**_MOVER_ATTN, "v": _TOK},
    "s_anti_copier": {**_S2_ATTN, "v": _TOK},
    "s_copier": {**_S2_ATTN, "v": _TOK},
    "io_position_writer": {**_MOVER_ATTN, "v": frozenset({"POS"})},
    "s2_junk": {**_S2_ATTN, "v": frozenset({"DUP"})},
    "flag_writer": {**_DUP_ATTN, "v": _ANCHOR_POS},
    "prevx_writer": {**_PREV_ATTN, "v": _TOK},
    "weak_prev": {**_PREV_SINK_ATTN, "v": _TOK},
    "prev_junk": {**_PREV_ATTN, "v": _TOK},
    "dup_junk": {**_DUP_ATTN, "v": _TOK},
    "ind_junk": {**_IND_ATTN, "v": frozenset({"PREV"})},
    "background": {"q": frozenset({"anchor"}), "k": frozenset({"isname", "POS"}), "v": _TOK},
}


@dataclass
class Layout:
    """Where the features live in the abstract coordinates (see :mod:`ioi_helpers.planted`),
    plus ``nmw`` (the name the Name Movers wrote, read by the backups), ``prevx`` (read by the
    Induction heads' values only) and ``junk`` (read by nothing)."""

    anchor: int
    pos: slice
    tok: slice
    isname: int
    prev: slice
    dup: slice
    flag: int
    sinh: slice
    out: slice
    dpos: slice
    spos: slice
    nmw: slice
    prevx: slice
    junk: slice
    n: int


def _layout() -> Layout:
    i = 0

    def take(k):
        nonlocal i
        s = slice(i, i + k)
        i += k
        return s

    anchor = take(1).start
    pos, tok = take(P_DIM), take(T_DIM)
    isname = take(1).start
    prev, dup = take(T_DIM), take(T_DIM)
    flag = take(1).start
    sinh, out = take(T_DIM), take(T_DIM)
    dpos, spos = take(PC_DIM), take(PC_DIM)
    nmw, prevx, junk = take(T_DIM), take(T_DIM), take(JUNK_DIM)
    return Layout(anchor, pos, tok, isname, prev, dup, flag, sinh, out, dpos, spos, nmw, prevx, junk, i)


def planted_heads() -> dict[str, list[tuple[int, int]]]:
    """The paper's heads by class (:data:`ioi_helpers.paper.CIRCUIT`), in the paper's order."""
    from .paper import CIRCUIT

    return {c: [tuple(h) for h in CIRCUIT[c]] for c in base.CLASSES}


def choose_decoys(seed: int) -> tuple[dict[str, tuple[int, int]], list[tuple[int, int]]]:
    """The decoys' heads (name -> head) and the background heads for a seed: drawn among the
    heads the paper's circuit leaves free, each decoy in its layer range."""
    rng = random.Random(f"gpt2-planted-decoys-{seed}")
    taken = {h for hs in planted_heads().values() for h in hs}
    decoys = {}
    names = [*DECOY_LAYERS, *(n + "~" for n in PARTNERED)]
    for name in names:
        lo, hi = DECOY_LAYERS[name.rstrip("~")]
        free = [(l, h) for l in range(lo, hi + 1) for h in range(N_HEADS) if (l, h) not in taken]
        decoys[name] = rng.choice(free)
        taken.add(decoys[name])
    lo, hi = BACKGROUND_LAYERS
    free = [(l, h) for l in range(lo, hi + 1) for h in range(N_HEADS) if (l, h) not in taken]
    background = sorted(rng.sample(free, N_BACKGROUND))
    return decoys, background


def build(seed: int = 0, calibrate: bool = True):
    """The Hugging Face ``GPT2LMHeadModel`` of ``gpt2-planted`` for ``seed``, with ``.planted``
    (class -> sorted heads), ``.planted_decoys`` (decoy -> head) and ``.planted_calibration``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .models import get_tokenizer

    seed = base.check_seed(seed)
    tok = get_tokenizer()
    L = _layout()
    d = D_MODEL
    gen = torch.Generator().manual_seed(2_000_029 * seed + 31)
    heads = planted_heads()
    decoys, background = choose_decoys(seed)

    # the residual basis: a random orthonormal basis of the complement of all-ones
    m = torch.randn(d, d, generator=gen, dtype=torch.float64)
    m[:, 0] = 1.0
    q, _ = torch.linalg.qr(m)
    basis = q[:, 1:L.n + 1].float()

    name_ids, sink_ids = base.names_and_tokens(tok)
    codes = base._unit(torch.randn(VOCAB, T_DIM, generator=gen))
    codes[name_ids] = base._name_codes(len(name_ids), T_DIM, gen)
    codes[sink_ids] = 0.0
    is_name = torch.zeros(VOCAB)
    is_name[name_ids] = 1.0

    pos = torch.zeros(N_POSITIONS, L.n)
    pos[:, L.anchor] = ANCHOR
    pos[torch.arange(N_POSITIONS), L.pos.start + torch.arange(N_POSITIONS) % P_DIM] = 1.0

    cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_POSITIONS, n_embd=d, n_layer=N_LAYERS,
                     n_head=N_HEADS, n_inner=D_MLP, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                     bos_token_id=50256, eos_token_id=50256)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            from contextlib import nullcontext as no_init_weights
    with torch.random.fork_rng(), no_init_weights():
        torch.manual_seed(seed)
        hf = GPT2LMHeadModel(cfg)

    role: dict[tuple[int, int], tuple[str, dict]] = {}
    for c in base.CLASSES:
        for i, h in enumerate(heads[c]):
            role[h] = (c, {k: v[i] for k, v in STRENGTH[c].items()})
    for name, h in decoys.items():
        strength = dict(DECOY_STRENGTH[name.rstrip("~")])
        if name.endswith("~"):  # the partner: the same attention, the opposite output
            strength["sign"] = -1.0
        role[h] = ("decoy:" + name.rstrip("~"), strength)
    bg_gen = random.Random(f"gpt2-planted-background-{seed}")
    order = list(background)
    bg_gen.shuffle(order)  # which heads get the largest gains; gains come in +/- pairs
    for k, h in enumerate(order):
        role[h] = ("background", {"gain": BACKGROUND_TOP * BACKGROUND_RATIO ** (k // 2) * (-1.0) ** k})

    W = _HeadWriter(L)
    feat = torch.ones(L.n)
    feat[L.anchor] = 0.0
    # The distractors read every feature but write none into the position features: their random
    # writes there moved the position-0 sink and the ramp that the Induction heads' keys read, so
    # 5.5's attention S2->S1+1 ranged 0.55-0.86 over model seeds 0-4 (0.71-0.83 without them).
    write = feat.clone()
    write[L.pos] = 0.0
    scale = math.sqrt(D_HEAD)
    r = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731

    with torch.no_grad():
        tf = hf.transformer
        tf.wte.weight.copy_(codes @ basis[:, L.tok].T + is_name[:, None] * basis[:, L.isname])
        tf.wpe.weight.copy_(pos @ basis.T)
        for l, block in enumerate(tf.h):
            Wq, Wk, Wv = (torch.zeros(L.n, d) for _ in range(3))
            Wo = torch.zeros(d, L.n)
            for h in range(N_HEADS):
                sl = slice(h * D_HEAD, (h + 1) * D_HEAD)
                if (l, h) in role:
                    Q, K, V, O = W.head(*role[(l, h)])
                    Q = Q * scale
                else:
                    Q = r(L.n, D_HEAD) * feat[:, None] * DISTRACTOR_QK * scale / math.sqrt(D_HEAD) / 2
                    K = r(L.n, D_HEAD) * feat[:, None] * 2 / math.sqrt(D_HEAD)
                    V = r(L.n, D_HEAD) * feat[:, None] / math.sqrt(D_HEAD)
                    O = r(D_HEAD, L.n) * write[None, :] * DISTRACTOR_OV / math.sqrt(D_HEAD)
                Wq[:, sl], Wk[:, sl], Wv[:, sl], Wo[sl] = Q, K, V, O
            attn = block.attn
            attn.c_attn.weight.copy_(torch.cat([basis @ Wq, basis @ Wk, basis @ Wv], 1))
            attn.c_attn.bias.zero_()
            attn.c_proj.weight.copy_(Wo @ basis.T)
            attn.c_proj.bias.zero_()
            w_in = torch.zeros(L.n, D_MLP)
            w_out = torch.zeros(D_MLP, L.n)
            w_in[:, :MLP_HIDDEN_USED] = r(L.n, MLP_HIDDEN_USED) * feat[:, None] * MLP_STD
            w_out[:MLP_HIDDEN_USED] = r(MLP_HIDDEN_USED, L.n) * feat[None, :] * MLP_STD
            block.mlp.c_fc.weight.copy_(basis @ w_in)
            block.mlp.c_fc.bias.zero_()
            block.mlp.c_proj.weight.copy_(w_out @ basis.T)
            block.mlp.c_proj.bias.zero_()
            for ln in (block.ln_1, block.ln_2):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
        tf.ln_f.weight.fill_(1.0)
        tf.ln_f.bias.zero_()
        for name, p in hf.named_parameters():
            if name != "lm_head.weight":
                p.add_(torch.randn(p.shape, generator=gen) * NOISE_STD)
        ids = torch.tensor(name_ids)
        hf._planted_parts = {"ids": ids, "is_name": is_name,
                             "out": codes[ids] @ basis[:, L.out].T,
                             "const": (basis[:, L.anchor] / ANCHOR).expand(len(ids), d),
                             "noise": torch.randn(VOCAB, d, generator=gen) * NOISE_STD}
        gain, const = (1.0, 0.0)
        if calibrate:
            gain, const = base._calibrate(hf, tok)
        base._set_unembed(hf, gain, const)
        del hf._planted_parts
    hf.planted = {c: sorted(heads[c]) for c in base.CLASSES}
    hf.planted_decoys = {k: tuple(v) for k, v in decoys.items()}
    hf.planted_background = [tuple(h) for h in background]
    hf.planted_calibration = {"unembed gain": gain, "name logit": const}
    return hf.eval()


class _HeadWriter:
    """(Q, K, V, O) in abstract coordinates for each kind of head: Q, K, V [n, D_HEAD];
    O [D_HEAD, n]. The planted classes follow :func:`ioi_helpers.planted.build`."""

    def __init__(self, L: Layout):
        self.L = L
        n = L.n
        self.one = self.e(L.anchor) / ANCHOR
        self.p0 = self.e(L.pos.start)
        idx = torch.arange(P_DIM)
        self.shift = torch.zeros(P_DIM, P_DIM)
        self.shift[idx, (idx - 1) % P_DIM] = 1.0
        self.fold = torch.zeros(P_DIM, SELF_MOD)
        self.fold[idx, idx % SELF_MOD] = 1.0
        angle = 2 * math.pi * idx.float() / PC_PERIOD
        self.pcode = torch.stack([angle.cos(), angle.sin()], 1)
        self.pcode[0] = 0.0
        self.pcode_prev = self.shift @ self.pcode
        self.pcode_prev[0] = 0.0
        self.eye = torch.eye(T_DIM)
        self.n = n

    def e(self, idx):
        v = torch.zeros(self._n())
        v[idx] = 1.0
        return v

    def _n(self):
        return self.L.n

    def _zeros(self):
        return (*(torch.zeros(self.L.n, D_HEAD) for _ in range(3)), torch.zeros(D_HEAD, self.L.n))

    def _sink(self, Q, K, k, sink):
        Q[:, k] = self.one * sink
        K[:, k] = self.p0

    # attention patterns -----------------------------------------------------------------

    def _prev_attention(self, Q, K, score):
        Q[self.L.pos, :P_DIM] = score * self.shift
        K[self.L.pos, :P_DIM] = torch.eye(P_DIM)
        return P_DIM

    def _dup_attention(self, Q, K, score, src):
        L = self.L
        Q[L.tok, :T_DIM] = score * self.eye
        K[src, :T_DIM] = self.eye
        k = T_DIM
        if src == L.tok:  # no attention to itself
            Q[L.pos, k:k + SELF_MOD] = -2.0 * score * self.fold
            K[L.pos, k:k + SELF_MOD] = self.fold
            k += SELF_MOD
        return k

    def _ramp(self, Q, K, k, weight):
        """One more score term, ``weight`` x (the key's position mod P_DIM) / P_DIM: with
        weight > 0 later positions are preferred, with weight < 0 earlier ones."""
        Q[:, k] = self.one * weight
        K[self.L.pos, k] = torch.arange(P_DIM, dtype=torch.float32) / P_DIM
        return k + 1

    def _s2_attention(self, Q, K, flag, name):
        Q[:, 0] = self.one * flag
        K[self.L.flag, 0] = 1.0
        Q[:, 1] = self.one * name
        K[self.L.isname, 1] = 1.0
        return 2

    def _mover_attention(self, Q, K, name, inhibit, pos, written=0.0):
        L = self.L
        Q[:, 0] = self.one * name
        K[L.isname, 0] = 1.0
        Q[L.sinh, 1:1 + T_DIM] = -inhibit * self.eye
        if written:
            Q[L.nmw, 1:1 + T_DIM] = -written * self.eye
        K[L.tok, 1:1 + T_DIM] = self.eye
        k = 1 + T_DIM
        Q[L.spos, k:k + PC_DIM] = -pos * torch.eye(PC_DIM)
        K[L.pos, k:k + PC_DIM] = self.pcode
        return k + PC_DIM

    def _copy(self, V, O, src, dst, gain, col=0):
        V[src, col:col + T_DIM] = self.eye
        O[col:col + T_DIM, dst] = gain * self.eye

    # heads ------------------------------------------------------------------------------

    def head(self, kind: str, s: dict):
        L = self.L
        Q, K, V, O = self._zeros()
        if kind == "Previous Token":
            self._prev_attention(Q, K, s["score"])
            self._copy(V, O, L.tok, L.prev, s["gain"])
            return Q, K, V, O
        if kind in ("Duplicate Token", "Induction"):
            src = L.tok if kind == "Duplicate Token" else L.prev
            k = self._dup_attention(Q, K, s["score"], src)
            k = self._ramp(Q, K, k, -FIRST_OCCURRENCE)
            self._copy(V, O, src, L.dup, s["gain"])
            if kind == "Induction":  # the values also read PREVX (the prevx_writer decoy's output)
                V[L.prevx, :T_DIM] = self.eye
            V[:, T_DIM] = self.one - self.p0
            O[T_DIM, L.flag] = s["flag"]
            V[L.pos, T_DIM + 1:T_DIM + 1 + PC_DIM] = self.pcode if kind == "Duplicate Token" else self.pcode_prev
            O[T_DIM + 1:T_DIM + 1 + PC_DIM, L.dpos] = s["pos"] * torch.eye(PC_DIM)
            self._sink(Q, K, k, SINK[kind])
            return Q, K, V, O
        if kind == "S-Inhibition":
            k = self._s2_attention(Q, K, s["flag"], s["name"])
            k = self._ramp(Q, K, k, RECENCY)
            self._copy(V, O, L.dup, L.sinh, s["gain"])
            V[L.dpos, T_DIM:T_DIM + PC_DIM] = torch.eye(PC_DIM)
            O[T_DIM:T_DIM + PC_DIM, L.spos] = s["gain"] * torch.eye(PC_DIM)
            self._sink(Q, K, k, SINK[kind])
            return Q, K, V, O
        if kind in ("Name Mover", "Negative Name Mover", "Backup Name Mover"):
            k = self._mover_attention(Q, K, s["name"], s["inhibit"], s["pos"], s.get("written", 0.0))
            self._copy(V, O, L.tok, L.out, s["gain"])
            if kind == "Name Mover":  # what the backups read: the name this head moved
                O[:T_DIM, L.nmw] = NMW_GAIN * self.eye
            self._sink(Q, K, k, s.get("sink", SINK[kind]))
            return Q, K, V, O
        if kind == "background":  # attends the three names alike, copies with a small gain
            Q[:, 0] = self.one * 5.0
            K[L.isname, 0] = 1.0
            self._copy(V, O, L.tok, L.out, s["gain"])
            self._sink(Q, K, 1, 4.5)
            return Q, K, V, O
        return self._decoy(kind.removeprefix("decoy:"), s, Q, K, V, O)

    def _decoy(self, name: str, s: dict, Q, K, V, O):
        L = self.L
        junk = slice(L.junk.start, L.junk.start + 1)
        sign = s.get("sign", 1.0)
        if name == "io_low_gain":
            k = self._mover_attention(Q, K, 5.0, 0.3, 1.0)
            self._copy(V, O, L.tok, L.out, s["gain"])
            self._sink(Q, K, k, 4.0)
        elif name in ("s_anti_copier", "s_copier"):
            k = self._s2_attention(Q, K, 5.0, 2.5)
            self._copy(V, O, L.tok, L.out, s["gain"])
            self._sink(Q, K, k, 4.0)
        elif name == "io_position_writer":  # minus the IO's position code in SPOS: as S1's, the
            # Name Movers' queries then leave S1 (IO and S1 are two tokens apart: opposite codes)
            k = self._mover_attention(Q, K, 5.0, 0.3, 1.0)
            V[L.pos, :PC_DIM] = self.pcode
            O[:PC_DIM, L.spos] = -sign * s["gain"] * torch.eye(PC_DIM)
            self._sink(Q, K, k, 4.0)
        elif name == "s2_junk":
            k = self._s2_attention(Q, K, 5.0, 2.5)
            V[L.dup, 0] = 1.0 / math.sqrt(T_DIM)
            O[0, junk] = s["gain"]
            self._sink(Q, K, k, 4.0)
        elif name == "flag_writer":
            k = self._dup_attention(Q, K, s["score"], L.tok)
            V[:, 0] = self.one - self.p0
            O[0, L.flag] = sign * s["flag"]
            self._sink(Q, K, k, SINK["Duplicate Token"])
        elif name == "prevx_writer":
            self._prev_attention(Q, K, s["score"])
            self._copy(V, O, L.tok, L.prevx, sign * s["gain"])
        elif name == "weak_prev":
            k = self._prev_attention(Q, K, s["score"])
            self._copy(V, O, L.tok, L.prev, sign * s["gain"])
            self._sink(Q, K, k, s["sink"])
        elif name == "prev_junk":
            self._prev_attention(Q, K, s["score"])
            V[L.tok, 0] = 1.0
            O[0, junk] = 0.5
        elif name in ("dup_junk", "ind_junk"):
            src = L.tok if name == "dup_junk" else L.prev
            k = self._dup_attention(Q, K, s["score"], src)
            V[src, 0] = 1.0
            O[0, junk] = 0.5
            self._sink(Q, K, k, SINK["Duplicate Token"])
        else:  # pragma: no cover
            raise ValueError(f"unknown decoy {name!r}")
        return Q, K, V, O
