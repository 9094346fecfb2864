"""``ioi-planted``: a GPT-2 whose weights are written by formula so that it runs the paper's IOI
algorithm with all seven head classes in known heads (issue 10).

Nothing is trained. The model is a Hugging Face ``GPT2LMHeadModel`` with GPT-2's full
vocabulary (50257 tokens) and tokenizer, learned (here: constructed) position embeddings,
LayerNorms and GELU MLPs, so it goes through the same TransformerBridge path as GPT-2 small.

Shape: 8 layers x 4 heads, d_model 256, d_head 64, MLP 256, 128 positions (about 28 M
parameters, 26 M of them the 50257 x 256 token embedding and the untied unembedding). d_head 64 gives each planted
head the rank its QK circuit needs; d_model 256 keeps the unembedding (which dominates the
cost of a forward pass) about three times cheaper than GPT-2 small's.

Residual stream. The construction works in 255 feature coordinates orthogonal to the
all-ones direction, then maps them to the 256-d residual with a seeded random orthonormal
basis of that complement (a random rotation that fixes the all-ones direction, so every
feature stays mean-zero and LayerNorm's centring never touches it). Features:

* ``anchor`` (1 coordinate, value 16 = sqrt(d_model) at every position, from the position
  embedding): every other feature is small next to it, so each LayerNorm acts as a
  near-constant scale (about 1) and the construction stays linear where it matters;
* ``POS`` (48): one-hot position, taken modulo 48;
* ``TOK`` (40): the token's code. The 99 single-token names get low-coherence codes (a few
  steps of repulsion from random unit vectors), every other token a random unit vector, and
  the sentence openers that sit at position 0 in the prompts ("Then", "When", "After") and
  ``<|endoftext|>`` code 0 (position 0 is every head's attention sink, as there is no BOS);
* ``isname`` (1): 1 on name tokens;
* ``PREV`` (40): written by the Previous Token heads (the previous token's code);
* ``DUP`` (40) and ``flag`` (1): written by the Duplicate Token and Induction heads (the
  repeated token's code, and "this token is repeated");
* ``SINH`` (40): written by the S-Inhibition heads at END (the repeated name's code);
* ``DPOS`` (2) and ``SPOS`` (2): the position signal. The Duplicate Token and Induction heads
  write, at S2, a position code of S1 (cos and sin of 2 pi p / 4, read linearly from the
  one-hot ``POS`` of the attended position, or of the one before it for Induction); the
  S-Inhibition heads copy it to END. Period 4 because the IO and S1 slots are two tokens
  apart in every template ("[A] and [B]"), so their codes are opposite;
* ``OUT`` (40): the answer: the unembedding of name ``n`` reads ``OUT . code(n)`` (plus a
  constant for every name, read from the anchor); non-name tokens unembed to ~0.

Classes (per seed, the heads are drawn at random within layer ranges that respect the
algorithm's order; strengths are graded so that no head of a class is redundant):

* Previous Token (2 heads, layer 0-1): query POS(i) -> key POS(i-1); OV copies TOK into PREV.
* Duplicate Token (2, layers 0-2): query TOK(i) -> key TOK(j) (same token), minus a
  self-attention penalty (positions equal modulo 16) and a sink on position 0; OV copies TOK
  into DUP and writes ``flag`` (zero from the sink).
* Induction (2, layers 1-3, after the Previous Token heads): query TOK(i) -> key PREV(j):
  K-composition with the Previous Token output, attends to the token after the earlier
  occurrence; OV copies PREV (the repeated token's code) into DUP and writes ``flag``.
* S-Inhibition (3, layers 2-4, after Induction and Duplicate Token): query from END
  attends where ``flag`` and ``isname`` are high (S2); OV copies DUP into SINH and DPOS into
  SPOS, so what the Duplicate Token and Induction heads wrote at S2 (S's token and its earlier
  position) reaches END through these heads' values.
* Name Movers (3, layers 4-5): attend from END to names (``isname``), minus the name's
  overlap with SINH and the key position's overlap with SPOS (Q-composition with both signals
  of the S-Inhibition output: attention leaves S, and S1's position for the IO's; the position
  term is the heavier, as the paper's App. A finds for GPT-2 small); OV copies TOK into OUT
  (copy score ~100%).
* Negative Name Movers (2, layers 4-6): same attention, OV writes minus the name.
* Backup Name Movers (3, one layer among 5-7, after every Name Mover): same attention, plus a query
  term that inhibits names already written in OUT at END: while the Name Movers have written
  the IO there, the backups attend their sink; when the Name Movers are mean-ablated (p_ABC
  means carry no particular name) they attend the IO and copy it.

Every other head is a distractor: random Q/K/V/O that read and write features only (never
the anchor), weak enough to matter little, strong enough to give non-trivial patterns.
MLPs are small random GELU MLPs. All weights get small Gaussian noise.

Calibration (calibrated, not reproduced): the unembedding gain of OUT and the constant name
logit are set, per seed, from one pass over :data:`CALIBRATION_N` p_IOI prompts (dataset seed
:data:`CALIBRATION_DATA_SEED`, never used for reported numbers) so that the mean logit
difference is the paper's 3.56 and the mean IO probability about 0.5 (or just under the most
it can reach, when every name's logit is far above every other token's). Every other number is a
consequence of the construction.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

N_LAYERS = 8
N_HEADS = 4
D_HEAD = 64
N_POSITIONS = 128
D_MLP = 256  # small MLPs: they carry no part of the algorithm
P_DIM = 48  # one-hot positions, modulo P_DIM
T_DIM = 40  # token / name codes
PC_DIM = 2  # the position signal: (cos, sin) of 2*pi*position/PC_PERIOD
PC_PERIOD = 4  # the IO and S1 slots are two tokens apart ("[A] and [B]"): opposite codes
SELF_MOD = 16  # Duplicate Token self-attention penalty: positions equal modulo SELF_MOD
ANCHOR = 16.0
TARGET_LOGIT_DIFF = 3.56  # the paper's mean logit difference on GPT-2 small
TARGET_IO_PROB = 0.5
CALIBRATION_DATA_SEED = 987_654
CALIBRATION_N = 300  # prompts: the logit diff varies with the template (the position code)
SINK_TOKENS = ("Then", "When", "After", "<|endoftext|>")

CLASSES = ("Previous Token", "Duplicate Token", "Induction", "S-Inhibition", "Name Mover",
           "Negative Name Mover", "Backup Name Mover")
# heads per class, and the layer range (inclusive) each head is drawn from, for 8 layers
N_PER_CLASS = {"Previous Token": 2, "Duplicate Token": 2, "Induction": 2, "S-Inhibition": 3,
               "Name Mover": 3, "Negative Name Mover": 2, "Backup Name Mover": 3}
LAYER_RANGE = {"Previous Token": (0, 1), "Duplicate Token": (0, 2), "Induction": (1, 3),
               "S-Inhibition": (2, 4), "Name Mover": (4, 5), "Negative Name Mover": (4, 6),
               "Backup Name Mover": (5, 7)}
# Classes whose heads share one layer: a Backup Name Mover in a later layer than another would
# read that backup's output as "the name is already written" and stay quiet (a backup of the
# backup), so the backups share a layer, each seeing only what the Name Movers wrote.
SAME_LAYER = ("Backup Name Mover",)
# (earlier class, later class): every head of the first sits in a lower layer than every
# head of the second
ORDER = [("Previous Token", "Induction"), ("Duplicate Token", "S-Inhibition"),
         ("Induction", "S-Inhibition"), ("S-Inhibition", "Name Mover"),
         ("S-Inhibition", "Negative Name Mover"), ("Name Mover", "Backup Name Mover")]

# Graded strengths, strongest head first (see build()).
STRENGTH = {
    "Previous Token": {"score": [6.0, 3.5], "gain": [0.65, 0.45]},
    "Duplicate Token": {"score": [9.0, 7.5], "gain": [0.55, 0.4], "flag": [0.3, 0.22], "pos": [0.55, 0.4]},
    "Induction": {"score": [10.0, 8.5], "gain": [0.5, 0.38], "flag": [0.28, 0.2], "pos": [0.5, 0.38]},
    "S-Inhibition": {"flag": [5.0, 4.3, 3.6], "name": [2.5, 2.5, 2.5], "gain": [0.8, 0.7, 0.6]},
    "Name Mover": {"name": [5.5, 5.0, 4.5], "inhibit": [0.3, 0.3, 0.3], "pos": [1.0, 1.0, 1.0], "gain": [1.0, 0.75, 0.5]},
    "Negative Name Mover": {"name": [5.0, 4.5], "inhibit": [0.3, 0.3], "pos": [1.0, 1.0], "gain": [-0.22, -0.15]},
    "Backup Name Mover": {"name": [7.5, 7.2, 6.9], "inhibit": [0.6, 0.6, 0.6], "pos": [1.0, 1.0, 1.0],
                          "written": [8.0, 8.0, 8.0], "gain": [0.6, 0.465, 0.345]},
}
SINK = {"Previous Token": 0.0, "Duplicate Token": 6.0, "Induction": 6.0, "S-Inhibition": 4.0,
        "Name Mover": 4.0, "Negative Name Mover": 4.0, "Backup Name Mover": 6.5}
DISTRACTOR_QK = 1.2  # std of distractor attention scores (roughly)
DISTRACTOR_OV = 0.04
MLP_STD = 0.011
NOISE_STD = 1e-3

# What each kind of head reads and writes, by feature (the names of the module docstring), read
# off head_weights in build(): the construction's own facts, which ioi_helpers.truth turns into
# the planted edges. ``anchor`` stands for the constant terms and the sinks.

#: Features whose value differs between p_IOI and p_ABC (p_ABC replaces the three names by three
#: others, so every feature derived from which names sit where differs; positions, the anchor
#: and the "is a name" bit are the same in both).
SIGNAL_FEATURES = frozenset({"TOK", "PREV", "DUP", "flag", "DPOS", "SINH", "SPOS", "OUT"})

#: What each sender writes: the embedding, then each class's O matrix.
WRITES: dict[str, frozenset[str]] = {
    "input": frozenset({"anchor", "POS", "TOK", "isname"}),
    "Previous Token": frozenset({"PREV"}),
    "Duplicate Token": frozenset({"DUP", "flag", "DPOS"}),
    "Induction": frozenset({"DUP", "flag", "DPOS"}),
    "S-Inhibition": frozenset({"SINH", "SPOS"}),
    "Name Mover": frozenset({"OUT"}),
    "Negative Name Mover": frozenset({"OUT"}),
    "Backup Name Mover": frozenset({"OUT"}),
}

_MOVER_READS = {"q": frozenset({"anchor", "SINH", "SPOS"}),
                "k": frozenset({"isname", "TOK", "POS"}), "v": frozenset({"TOK"})}
#: What each class's q, k and v matrices read (the rows of Q, K, V that are set), and what the
#: logits read (the unembedding: ``OUT`` along each name's code, plus a constant from the anchor).
READS: dict[str, dict[str, frozenset[str]]] = {
    "Previous Token": {"q": frozenset({"POS"}), "k": frozenset({"POS"}), "v": frozenset({"TOK"})},
    "Duplicate Token": {"q": frozenset({"TOK", "POS", "anchor"}), "k": frozenset({"TOK", "POS"}),
                        "v": frozenset({"TOK", "POS", "anchor"})},
    "Induction": {"q": frozenset({"TOK", "anchor"}), "k": frozenset({"PREV", "POS"}),
                  "v": frozenset({"PREV", "POS", "anchor"})},
    "S-Inhibition": {"q": frozenset({"anchor"}), "k": frozenset({"flag", "isname", "POS"}),
                     "v": frozenset({"DUP", "DPOS"})},
    "Name Mover": _MOVER_READS,
    "Negative Name Mover": _MOVER_READS,
    "Backup Name Mover": {**_MOVER_READS, "q": _MOVER_READS["q"] | {"OUT"}},
    "logits": {"logits": frozenset({"OUT", "anchor"})},
}


@dataclass
class Layout:
    """Where the features live in the 255 abstract coordinates."""

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
    return Layout(anchor, pos, tok, isname, prev, dup, flag, sinh, out, dpos, spos, i)


def check_shape(n_layers: int, n_heads: int) -> None:
    """A clear error for shapes the construction does not support."""
    for name, v in (("n_layers", n_layers), ("n_heads", n_heads)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"ioi-planted: {name} must be an int, got {v!r}")
    if n_layers < N_LAYERS or n_heads < N_HEADS:
        raise ValueError(
            f"ioi-planted needs at least {N_LAYERS} layers x {N_HEADS} heads for its seven classes "
            f"in the algorithm's layer order ({sum(N_PER_CLASS.values())} planted heads), got "
            f"{n_layers} x {n_heads}")
    if n_heads * D_HEAD < _layout().n + 1:
        raise ValueError("ioi-planted: residual stream too small")  # pragma: no cover


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"ioi-planted: seed must be an int in [0, 2**31), got {seed!r}")
    return seed


def choose_heads(seed: int, n_layers: int = N_LAYERS, n_heads: int = N_HEADS) -> dict[str, list]:
    """The planted heads of each class for a seed: layers drawn in each class's range until
    the order constraints hold and no layer is over-full, then head indices shuffled."""
    rng = random.Random(f"ioi-planted-layout-{seed}")
    for _ in range(10_000):
        layers = {c: sorted(rng.randint(*LAYER_RANGE[c]) for _ in range(N_PER_CLASS[c]))
                  for c in CLASSES if c not in SAME_LAYER}
        for c in SAME_LAYER:
            layers[c] = [rng.randint(*LAYER_RANGE[c])] * N_PER_CLASS[c]
        if any(max(layers[a]) >= min(layers[b]) for a, b in ORDER):
            continue
        count = [0] * n_layers
        for c in CLASSES:
            for l in layers[c]:
                count[l] += 1
        if max(count) > n_heads:
            continue
        break
    else:  # pragma: no cover
        raise RuntimeError("no layout found")
    free = {l: rng.sample(range(n_heads), n_heads) for l in range(n_layers)}
    out: dict[str, list] = {}
    for c in CLASSES:
        # strength order: the i-th head of a class gets the i-th strength; shuffle which
        # layer gets the strongest so that strength is not readable from the layer
        ls = layers[c][:]
        rng.shuffle(ls)
        out[c] = [(l, free[l].pop()) for l in ls]
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _name_codes(n: int, dim: int, gen: torch.Generator, steps: int = 150) -> torch.Tensor:
    """``n`` unit vectors in ``dim`` dims with low mutual coherence, summing to ~0 (repulsion:
    gradient steps on the sum of squared inner products to the 4th power, then centring)."""
    x = _unit(torch.randn(n, dim, generator=gen, dtype=torch.float64))
    for _ in range(steps):
        g = x @ x.T
        g.fill_diagonal_(0)
        grad = (g.pow(3)) @ x
        x = _unit(x - 0.05 * grad / (grad.norm(dim=-1, keepdim=True).mean() + 1e-12) * 0.5)
    x = x - x.mean(0, keepdim=True)
    return _unit(x).float()


def names_and_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the single-token names (with a leading space) and of the sink tokens."""
    from .dataset import prompt_data, single_token_words

    names = single_token_words(tokenizer, prompt_data()["names"])[0]
    name_ids = [tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in names]
    sink_ids = []
    for w in SINK_TOKENS:
        ids = tokenizer.encode(w, add_special_tokens=False)
        if len(ids) == 1:
            sink_ids.append(ids[0])
    return name_ids, sink_ids


def build(seed: int = 0, n_layers: int = N_LAYERS, n_heads: int = N_HEADS, calibrate: bool = True):
    """The Hugging Face ``GPT2LMHeadModel`` of ``ioi-planted`` for ``seed``, with
    ``.planted`` (class name -> sorted list of (layer, head))."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .models import get_tokenizer

    seed = check_seed(seed)
    check_shape(n_layers, n_heads)
    tok = get_tokenizer()
    L = _layout()
    d = n_heads * D_HEAD
    vocab = 50257
    gen = torch.Generator().manual_seed(1_000_003 * seed + 17)
    heads = choose_heads(seed, n_layers, n_heads)

    # ---- the residual basis: a random orthonormal basis of the complement of all-ones
    m = torch.randn(d, d, generator=gen, dtype=torch.float64)
    m[:, 0] = 1.0
    q, _ = torch.linalg.qr(m)
    basis = q[:, 1:L.n + 1].float()  # [d, n]: feature coordinates -> residual

    # ---- codes
    name_ids, sink_ids = names_and_tokens(tok)
    codes = _unit(torch.randn(vocab, T_DIM, generator=gen))
    codes[name_ids] = _name_codes(len(name_ids), T_DIM, gen)
    codes[sink_ids] = 0.0
    is_name = torch.zeros(vocab)
    is_name[name_ids] = 1.0

    pos = torch.zeros(N_POSITIONS, L.n)
    pos[:, L.anchor] = ANCHOR
    pos[torch.arange(N_POSITIONS), L.pos.start + torch.arange(N_POSITIONS) % P_DIM] = 1.0

    cfg = GPT2Config(vocab_size=vocab, n_positions=N_POSITIONS, n_embd=d, n_layer=n_layers,
                     n_head=n_heads, n_inner=D_MLP, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                     bos_token_id=50256, eos_token_id=50256)
    try:  # skip the random initialisation: every weight is overwritten below
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            from contextlib import nullcontext as no_init_weights

    with torch.random.fork_rng(), no_init_weights():  # every weight is overwritten below
        torch.manual_seed(seed)
        hf = GPT2LMHeadModel(cfg)
    role = {h: (c, i) for c in CLASSES for i, h in enumerate(heads[c])}
    scale = math.sqrt(D_HEAD)  # HF divides scores by sqrt(d_head)

    def e(idx, n=L.n):
        v = torch.zeros(n)
        v[idx] = 1.0
        return v

    eye_t = torch.eye(T_DIM)
    # abstract-coordinate maps, feature f (row vector, LN(x) ~ x): q = f @ Q, etc.
    one = e(L.anchor) / ANCHOR  # reads 1 from the anchor

    def block(rows_slice, mat):  # a [n, k] map reading a slice with matrix mat [len, k]
        out = torch.zeros(L.n, mat.shape[1])
        out[rows_slice] = mat
        return out

    pos_idx = torch.arange(P_DIM)
    shift = torch.zeros(P_DIM, P_DIM)  # p_i -> p_{i-1}
    shift[pos_idx, (pos_idx - 1) % P_DIM] = 1.0
    fold = torch.zeros(P_DIM, SELF_MOD)
    fold[pos_idx, pos_idx % SELF_MOD] = 1.0
    p0 = e(L.pos.start)
    # the position code of each one-hot position (zero at the sink, position 0), and the code
    # of the position before (what an Induction head, attending S1+1, reports for S1)
    angle = 2 * math.pi * pos_idx.float() / PC_PERIOD
    pcode = torch.stack([angle.cos(), angle.sin()], 1)
    pcode[0] = 0.0
    pcode_prev = shift @ pcode
    pcode_prev[0] = 0.0

    def head_weights(c: str, i: int):
        """(Q, K, V, O) in abstract coordinates: Q, K, V [n, D_HEAD]; O [D_HEAD, n]."""
        Q, K, V = (torch.zeros(L.n, D_HEAD) for _ in range(3))
        O = torch.zeros(D_HEAD, L.n)
        s = STRENGTH[c]
        sink = SINK[c]
        if c == "Previous Token":
            Q[L.pos, :P_DIM] = s["score"][i] * shift
            K[L.pos, :P_DIM] = torch.eye(P_DIM)
            V[L.tok, :T_DIM] = eye_t
            O[:T_DIM, L.prev] = s["gain"][i] * eye_t
            return Q, K, V, O
        k = 0
        if c in ("Duplicate Token", "Induction"):
            src = L.tok if c == "Duplicate Token" else L.prev
            Q[L.tok, :T_DIM] = s["score"][i] * eye_t
            K[src, :T_DIM] = eye_t
            k = T_DIM
            if c == "Duplicate Token":  # no attention to itself
                Q[L.pos, k:k + SELF_MOD] = -2.0 * s["score"][i] * fold
                K[L.pos, k:k + SELF_MOD] = fold
                k += SELF_MOD
            V[src, :T_DIM] = eye_t
            O[:T_DIM, L.dup] = s["gain"][i] * eye_t
            V[:, T_DIM] = one - p0  # 1 except at the sink
            O[T_DIM, L.flag] = s["flag"][i]
            # the position signal: where the earlier occurrence sits (the attended position
            # for a Duplicate Token head, the one before it for an Induction head)
            V[L.pos, T_DIM + 1:T_DIM + 1 + PC_DIM] = pcode if c == "Duplicate Token" else pcode_prev
            O[T_DIM + 1:T_DIM + 1 + PC_DIM, L.dpos] = s["pos"][i] * torch.eye(PC_DIM)
        elif c == "S-Inhibition":
            Q[:, 0] = one * s["flag"][i]
            K[L.flag, 0] = 1.0
            Q[:, 1] = one * s["name"][i]
            K[L.isname, 1] = 1.0
            k = 2
            V[L.dup, :T_DIM] = eye_t
            O[:T_DIM, L.sinh] = s["gain"][i] * eye_t
            V[L.dpos, T_DIM:T_DIM + PC_DIM] = torch.eye(PC_DIM)
            O[T_DIM:T_DIM + PC_DIM, L.spos] = s["gain"][i] * torch.eye(PC_DIM)
        else:  # the three kinds of Name Movers
            Q[:, 0] = one * s["name"][i]
            K[L.isname, 0] = 1.0
            Q[L.sinh, 1:1 + T_DIM] = -s["inhibit"][i] * eye_t
            if c == "Backup Name Mover":
                Q[L.out, 1:1 + T_DIM] = -s["written"][i] * eye_t
            K[L.tok, 1:1 + T_DIM] = eye_t
            k = 1 + T_DIM
            # Q-composition with the position signal: attention leaves the position it names
            Q[L.spos, k:k + PC_DIM] = -s["pos"][i] * torch.eye(PC_DIM)
            K[L.pos, k:k + PC_DIM] = pcode
            k += PC_DIM
            V[L.tok, :T_DIM] = eye_t
            O[:T_DIM, L.out] = s["gain"][i] * eye_t
        Q[:, k] = one * sink
        K[:, k] = p0
        return Q, K, V, O

    feat = torch.ones(L.n)
    feat[L.anchor] = 0.0  # distractors and MLPs read and write features only

    with torch.no_grad():
        tf = hf.transformer
        # token embedding: the code in TOK, 1 in isname (computed per feature block: the
        # 50257 x 255 feature matrix is mostly zeros)
        tf.wte.weight.copy_(codes @ basis[:, L.tok].T + is_name[:, None] * basis[:, L.isname])
        tf.wpe.weight.copy_(pos @ basis.T)
        for l, block_ in enumerate(tf.h):
            Wq, Wk, Wv = (torch.zeros(L.n, d) for _ in range(3))
            Wo = torch.zeros(d, L.n)
            for h in range(n_heads):
                sl = slice(h * D_HEAD, (h + 1) * D_HEAD)
                if (l, h) in role:
                    Q, K, V, O = head_weights(*role[(l, h)])
                    Q = Q * scale
                else:
                    r = lambda *shape: torch.randn(*shape, generator=gen)
                    Q = r(L.n, D_HEAD) * feat[:, None] * DISTRACTOR_QK * scale / math.sqrt(D_HEAD) / 2
                    K = r(L.n, D_HEAD) * feat[:, None] * 2 / math.sqrt(D_HEAD)
                    V = r(L.n, D_HEAD) * feat[:, None] / math.sqrt(D_HEAD)
                    O = r(D_HEAD, L.n) * feat[None, :] * DISTRACTOR_OV / math.sqrt(D_HEAD)
                Wq[:, sl], Wk[:, sl], Wv[:, sl], Wo[sl] = Q, K, V, O
            attn = block_.attn
            attn.c_attn.weight.copy_(torch.cat([basis @ Wq, basis @ Wk, basis @ Wv], 1))
            attn.c_attn.bias.zero_()
            attn.c_proj.weight.copy_(Wo @ basis.T)
            attn.c_proj.bias.zero_()
            mlp = block_.mlp
            w_in = torch.randn(L.n, D_MLP, generator=gen) * feat[:, None] * MLP_STD
            w_out = torch.randn(D_MLP, L.n, generator=gen) * feat[None, :] * MLP_STD
            mlp.c_fc.weight.copy_(basis @ w_in)
            mlp.c_fc.bias.zero_()
            mlp.c_proj.weight.copy_(w_out @ basis.T)
            mlp.c_proj.bias.zero_()
            for ln in (block_.ln_1, block_.ln_2):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
        tf.ln_f.weight.fill_(1.0)
        tf.ln_f.bias.zero_()
        # noise on every weight
        for name, p in hf.named_parameters():
            if name != "lm_head.weight":  # its noise is added with it below
                p.add_(torch.randn(p.shape, generator=gen) * NOISE_STD)
        # unembedding: names read OUT along their code (gain 1 for now) and the anchor
        ids = torch.tensor(name_ids)
        hf._planted_parts = {"ids": ids, "is_name": is_name,
                             "out": codes[ids] @ basis[:, L.out].T,  # [names, d]
                             "const": (basis[:, L.anchor] / ANCHOR).expand(len(ids), d),
                             "noise": torch.randn(vocab, d, generator=gen) * NOISE_STD}
        gain, const = (1.0, 0.0)
        if calibrate:
            gain, const = _calibrate(hf, tok)
        _set_unembed(hf, gain, const)
        del hf._planted_parts
    hf.planted = {c: sorted(heads[c]) for c in CLASSES}
    hf.planted_calibration = {"unembed gain": gain, "name logit": const}
    return hf.eval()


def _set_unembed(hf, gain: float, const: float) -> None:
    p = hf._planted_parts
    w = p["noise"].clone()
    w[p["ids"]] += gain * p["out"] + const * p["const"]
    hf.lm_head.weight.copy_(w)


@torch.no_grad()
def _calibrate(hf, tok) -> tuple[float, float]:
    """Unembedding gain and constant name logit giving mean logit diff 3.56 and mean IO
    probability ~0.5 on the calibration prompts (see the module docstring)."""
    from .dataset import make_ioi_dataset

    ds = make_ioi_dataset(tok, CALIBRATION_N, "mixed", seed=CALIBRATION_DATA_SEED, prepend_bos=False)
    hidden = hf.transformer(ds.tokens).last_hidden_state  # after ln_f
    h = hidden[torch.arange(len(ds)), ds.pos["END"]]  # [n, d]
    p = hf._planted_parts
    ids = p["ids"]
    noise_l = h @ p["noise"].T  # [n, vocab]
    out_n, const_n = h @ p["out"].T, (h @ p["const"].T).double()  # [n, names]
    idx = torch.arange(len(ds))
    col = torch.full((p["is_name"].shape[0],), -1, dtype=torch.long)
    col[ids] = torch.arange(len(ids))
    io_c, s_c = col[ds.io_tokens], col[ds.s_tokens]
    ld_noise = noise_l[idx, ds.io_tokens] - noise_l[idx, ds.s_tokens]
    ld_out = out_n[idx, io_c] - out_n[idx, s_c]
    gain = float((TARGET_LOGIT_DIFF - ld_noise.mean()) / ld_out.mean())
    other = p["is_name"] == 0
    lse_other = noise_l[:, other].double().logsumexp(-1)  # the constant moves name logits only
    names = (gain * out_n + noise_l[:, ids]).double()

    def io_prob(c):
        z = names + c * const_n
        lse = torch.logaddexp(lse_other, z.logsumexp(-1))
        return (z[idx, io_c] - lse).exp().mean().item()

    # the IO probability rises with the constant up to a cap (all the mass on the names), which
    # can sit below the target: then aim just under the cap, not at an unbounded constant
    target = min(TARGET_IO_PROB, 0.95 * io_prob(100.0))
    lo, hi = -100.0, 100.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if io_prob(mid) < target else (lo, mid)
    return gain, (lo + hi) / 2
