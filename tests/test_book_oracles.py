"""Oracles for the chapters' headline numbers: after the book runs on ioi-planted (the
``built_book`` fixture), each test reads what a chapter recorded and computes the same number
again here, with a plain forward pass, hand-written hooks and hand indexing, never through the
package function that produced it. Only the inputs are shared: the model (``load_model``) and the
prompts (``dataset``), rebuilt from the settings the chapter recorded."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ioi_helpers import dataset, models, paper

pytestmark = pytest.mark.book
TOL = 1e-3  # relative (plus 1e-5 absolute): batching and hook order change float sums in the last digits


def _values(built_book, chapter: str) -> dict:
    return json.loads((built_book / "results" / f"{chapter}.json").read_text())["values"]


def _model(name: str):
    """The model a chapter names in its settings: ``ioi-planted(seed=0)`` or ``ioi-planted``."""
    m = re.fullmatch(r"([\w-]+)(?:\(seed=(\d+)\))?", name)
    assert m, name
    seed = int(m.group(2) or 0)
    return models.load_model(m.group(1), seed=seed) if m.group(2) else models.load_model(m.group(1))


def _prompts(settings: dict):
    tok = models.get_tokenizer()
    ioi = dataset.make_ioi_dataset(tok, settings["N"], settings["template_set"], seed=settings["seed"],
                                   prepend_bos=settings["prepend_bos"])
    return ioi, dataset.make_abc_dataset(tok, ioi)


def _end(logits: torch.Tensor, ds) -> torch.Tensor:
    """Each prompt's logits at its END position, by hand indexing."""
    return torch.stack([logits[i, int(ds.pos["END"][i])] for i in range(len(ds))])


def _close(ours: float, recorded: float) -> bool:
    return abs(ours - recorded) <= TOL * abs(recorded) + 1e-5


@torch.no_grad()
def test_chapter_1_baseline_numbers_by_hand(built_book):
    v = _values(built_book, "01_task")
    s = v["baseline.logit_diff"]["settings"]
    model = _model(s["model"])
    ioi, abc = _prompts(s | {"N": s["N"]})
    end = _end(model(ioi.tokens), ioi)
    io, sub = end[range(len(ioi)), ioi.io_tokens], end[range(len(ioi)), ioi.s_tokens]
    ld = io - sub
    prob = torch.softmax(end.double(), dim=-1)[range(len(ioi)), ioi.io_tokens]
    abc_end = _end(model(abc.tokens), abc)  # the clean IO and S tokens, read on p_ABC
    abc_ld = abc_end[range(len(ioi)), ioi.io_tokens] - abc_end[range(len(ioi)), ioi.s_tokens]
    mine = {"baseline.logit_diff": ld.mean().item(), "baseline.io_prob": prob.mean().item(),
            "baseline.io_above_s": (ld > 0).double().mean().item(),
            "baseline.abc_logit_diff": abc_ld.mean().item()}
    wrong = {k: (x, v[k]["value"]) for k, x in mine.items() if not _close(x, v[k]["value"])}
    assert not wrong, f"(by hand, recorded): {wrong}"


def _kept_circuit(built_book) -> dict[tuple[int, int], set[str]]:
    """The circuit chapter 7 evaluated on ioi-planted, read from what chapters 2-6 recorded:
    each class's heads, kept at the class's position (the paper's table of positions)."""
    circuit: dict[tuple[int, int], set[str]] = {}
    for chapter in ("02_name_movers", "03_s_inhibition", "04_induction_and_duplicate_token",
                    "05_previous_token", "06_backup_name_movers"):
        for key, entry in _values(built_book, chapter).items():
            if key.startswith("classes.") and entry["value"]:
                cls = key.removeprefix("classes.")
                for head in entry["value"]:
                    circuit.setdefault(tuple(head), set()).add(paper.KEPT_AT[cls])
    return circuit


def _abc_means(model, ioi, abc) -> dict[int, torch.Tensor]:
    """Per layer, ``[prompt, position, head, d_head]``: each head's ``hook_z`` averaged over the
    p_ABC prompts of prompt i's template group, position by position."""
    L = model.cfg.n_layers
    z_abc = {}
    model.run_with_hooks(abc.tokens, fwd_hooks=[
        (f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: z_abc.__setitem__(l, z.clone())) for l in range(L)])
    means = {l: torch.zeros_like(z_abc[l][:len(ioi)]) for l in range(L)}
    for g in set(ioi.groups):
        ref = [i for i, x in enumerate(abc.groups) if x == g]
        for l in range(L):
            m = z_abc[l][ref].mean(0)
            for i in (i for i, x in enumerate(ioi.groups) if x == g):
                means[l][i] = m
    return means


def _mean_ablated_logit_diff(model, ioi, abc, ablated, means=None) -> float:
    """The mean logit difference with head (l, h)'s output at prompt i, position p replaced by
    its mean over the p_ABC prompts of the same template, at that position, wherever
    ``ablated[l, i, p, h]``; hooks on ``hook_z`` written here (``means``: :func:`_abc_means`,
    computed here when not given)."""
    L = model.cfg.n_layers
    means = _abc_means(model, ioi, abc) if means is None else means

    def replace(z, hook, l):
        where = ablated[l].to(z.device)[..., None]
        return torch.where(where, means[l].to(z.dtype), z)

    logits = model.run_with_hooks(ioi.tokens, fwd_hooks=[
        (f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: replace(z, hook, l)) for l in range(L)])
    end = _end(logits, ioi)
    rows = range(len(ioi))
    return (end[rows, ioi.io_tokens] - end[rows, ioi.s_tokens]).mean().item()


def _mask(model, ioi, heads_at: dict, everywhere_else: bool = False) -> torch.Tensor:
    """``[layer, prompt, position, head]``: True at each listed head's named positions, by a
    loop over prompts; ``everywhere_else`` flips it (ablate all but those)."""
    cfg = model.cfg
    mask = torch.zeros(cfg.n_layers, len(ioi), ioi.tokens.shape[1], cfg.n_heads, dtype=torch.bool)
    for (l, h), names in heads_at.items():
        for i in range(len(ioi)):
            for name in names:
                mask[l, i, int(ioi.pos[name][i]), h] = True
    return ~mask if everywhere_else else mask


def _clean_logit_diff(model, ioi) -> float:
    end = _end(model(ioi.tokens), ioi)
    rows = range(len(ioi))
    return (end[rows, ioi.io_tokens] - end[rows, ioi.s_tokens]).mean().item()


@torch.no_grad()
def test_chapter_7_faithfulness_by_hand(built_book):
    """F(M), F(C) and F(C)/F(M): every head outside the circuit, and every circuit head away from
    its kept position, mean-ablated (p_ABC, per template and position)."""
    v = _values(built_book, "07_circuit_evaluation")
    s = v["circuit.F_C"]["settings"]
    assert s["ablation"].startswith("mean"), s
    circuit = _kept_circuit(built_book)
    assert sorted(circuit) == sorted(map(tuple, v["circuit.heads"]["value"]))
    model = _model(s["model"])
    ioi, abc = _prompts(s)
    f_c = _mean_ablated_logit_diff(model, ioi, abc, _mask(model, ioi, circuit, everywhere_else=True))
    f_m = _clean_logit_diff(model, ioi)
    mine = {"circuit.F_M": f_m, "circuit.F_C": f_c, "circuit.faithfulness": f_c / f_m}
    wrong = {k: (x, v[k]["value"]) for k, x in mine.items() if not _close(x, v[k]["value"])}
    assert not wrong, f"(by hand, recorded): {wrong}"


def _found_classes(built_book) -> dict[str, list[tuple[int, int]]]:
    """Each non-empty class, as chapters 2-6 recorded it."""
    out = {}
    for chapter in ("02_name_movers", "03_s_inhibition", "04_induction_and_duplicate_token",
                    "05_previous_token", "06_backup_name_movers"):
        for key, entry in _values(built_book, chapter).items():
            if key.startswith("classes.") and entry["value"]:
                out[key.removeprefix("classes.")] = [tuple(h) for h in entry["value"]]
    return out


def _without(model, ioi, circuit, removed) -> torch.Tensor:
    """The mask of the run C \\ removed: every head knocked out everywhere except the circuit's
    heads outside ``removed``, each at its kept positions."""
    return _mask(model, ioi, {h: p for h, p in circuit.items() if h not in set(removed)}, everywhere_else=True)


@torch.no_grad()
def test_chapter_7_incompleteness_by_hand(built_book):
    """|F(C \\ K) - F(M \\ K)| for every class set K, every greedy set, the empty set and three
    random sets chapter 7 recorded: K knocked out of the circuit everywhere, and out of the
    model at its kept positions (the authors' completeness.py) and, as the variant, everywhere.
    The class sets must be the classes of chapters 2-6, the Backup Name Movers folded into the
    Name Movers (the authors' 6 groups), and the recorded maxima must come from these rows."""
    v = _values(built_book, "07_circuit_evaluation")
    entry = v["completeness.sets"]
    s, rows = entry["settings"], entry["value"]
    assert s["ablation"].startswith("mean") and s["k_positions"] == "kept", s
    circuit = _kept_circuit(built_book)
    classes = _found_classes(built_book)
    groups = {frozenset(classes.get("Name Mover", []) + classes.get("Backup Name Mover", []))}
    groups |= {frozenset(hs) for c, hs in classes.items() if c not in ("Name Mover", "Backup Name Mover")}
    assert {frozenset(map(tuple, r["heads"])) for r in rows if r["kind"] == "class"} - {frozenset()} == groups
    for kind, key in (("greedy", "circuit.greedy_incompleteness"), ("class", "circuit.class_incompleteness_max"),
                      ("random", "circuit.random_incompleteness_max")):
        assert max(r["incompleteness"] for r in rows if r["kind"] == kind) == v[key]["value"], kind
    chosen = [r for r in rows if r["kind"] != "random"]  # class, 7-class grouping, empty and greedy sets
    chosen += [r for r in rows if r["kind"] == "random" and r["heads"]][:3]
    assert sum(bool(r["heads"]) for r in chosen) >= 3, chosen
    model = _model(s["model"])
    ioi, abc = _prompts(s)
    means = _abc_means(model, ioi, abc)
    wrong = {}
    for r in chosen:
        k = [tuple(h) for h in r["heads"]]
        assert set(k) <= set(circuit), (r["K"], k)
        f_c = _mean_ablated_logit_diff(model, ioi, abc, _without(model, ioi, circuit, k), means)
        f_m = _mean_ablated_logit_diff(model, ioi, abc, _mask(model, ioi, {h: circuit[h] for h in k}), means)
        everywhere = _mask(model, ioi, {})  # K at every position
        for l, h in k:
            everywhere[l, :, :, h] = True
        f_m_all = _mean_ablated_logit_diff(model, ioi, abc, everywhere, means)
        mine = {"F_C_minus_K": f_c, "F_M_minus_K": f_m, "incompleteness": abs(f_c - f_m),
                "F_M_minus_K_everywhere": f_m_all}
        wrong |= {(r["K"], x): (y, r[x]) for x, y in mine.items() if not _close(y, r[x])}
    assert not wrong, f"(by hand, recorded): {wrong}"


@torch.no_grad()
def test_chapter_7_minimality_by_hand(built_book):
    """|F(C \\ (K u {v})) - F(C \\ K)| for every circuit head v, with the K chapter 7 recorded for
    v, and the smallest as a fraction of F(M). K must follow the authors' rule on the classes of
    chapters 2-6: the other heads of v's class, except among the Name Movers (Backup Name
    Movers after them), where K(v) is the heads ordered before v."""
    v = _values(built_book, "07_circuit_evaluation")
    ks = {tuple(int(x) for x in name.split(".")): [tuple(h) for h in k]
          for name, k in v["minimality.ours_k"]["value"].items()}
    s = v["minimality.ours_k"]["settings"]
    assert s["ablation"].startswith("mean"), s
    circuit = _kept_circuit(built_book)
    assert sorted(ks) == sorted(circuit)
    classes = _found_classes(built_book)
    movers = classes.get("Name Mover", []) + classes.get("Backup Name Mover", [])
    for c, hs in classes.items():
        if c not in ("Name Mover", "Backup Name Mover"):
            assert all(sorted(ks[h]) == sorted(set(hs) - {h}) for h in hs), (c, {h: ks[h] for h in hs})
    chain = sorted(movers, key=lambda h: len(ks[h]))  # K(v) = the movers before v, Backup after the Name Movers
    assert all(ks[h] == chain[:i] for i, h in enumerate(chain)), {h: ks[h] for h in movers}
    assert set(chain[:len(classes.get("Name Mover", []))]) == set(classes.get("Name Mover", []))
    model = _model(s["model"])
    ioi, abc = _prompts(s)
    means = _abc_means(model, ioi, abc)
    memo: dict[frozenset, float] = {}

    def f_c(removed):
        key = frozenset(removed)
        if key not in memo:
            memo[key] = _mean_ablated_logit_diff(model, ioi, abc, _without(model, ioi, circuit, removed), means)
        return memo[key]

    mine = {f"minimality.ours.{l}.{h}": abs(f_c(ks[l, h] + [(l, h)]) - f_c(ks[l, h])) for l, h in circuit}
    mine["minimality.smallest_fraction"] = min(mine.values()) / abs(_clean_logit_diff(model, ioi))
    wrong = {k: (x, v[k]["value"]) for k, x in mine.items() if not _close(x, v[k]["value"])}
    assert not wrong, f"(by hand, recorded): {wrong}"


@torch.no_grad()
def test_chapters_2_and_6_name_mover_knockout_by_hand(built_book):
    """The Name Movers (as chapter 2 recorded them) mean-ablated at END: chapter 2's logit
    difference and chapter 6's drop, 1 - knocked out / clean."""
    v2, v6 = _values(built_book, "02_name_movers"), _values(built_book, "06_backup_name_movers")
    movers = {tuple(h): ["END"] for h in v2["classes.Name Mover"]["value"]}
    assert movers, "no Name Movers recorded on ioi-planted"
    mine, rec = {}, {}
    for chapter, v, key in (("02", v2, "knockout.name_mover.at_end.logit_diff"),
                            ("06", v6, "backup.name_mover_knockout_drop")):
        s = v[key]["settings"]
        model = _model(s["model"])
        ioi, abc = _prompts(s)
        ko = _mean_ablated_logit_diff(model, ioi, abc, _mask(model, ioi, movers))
        mine[chapter, key] = ko if chapter == "02" else 1 - ko / _clean_logit_diff(model, ioi)
        rec[chapter, key] = v[key]["value"]
    wrong = {k: (x, rec[k]) for k, x in mine.items() if not _close(x, rec[k])}
    assert not wrong, f"(by hand, recorded): {wrong}"


@torch.no_grad()
def test_chapter_8_adversarial_numbers_by_hand(built_book):
    """The logit difference, IO probability and S-above-IO fraction with the extra sentence
    naming IO (the adversarial case) and naming S (the control), by a plain forward pass."""
    from ioi_helpers import methods

    v = _values(built_book, "08_adversarial_examples")
    s = v["adversarial.io.logit_diff"]["settings"]
    model = _model(s["model"])
    tok = models.get_tokenizer()
    base = dataset.make_ioi_dataset(tok, s["N"], s["template_set"], seed=s["seed"], prepend_bos=s["prepend_bos"])
    wrong = {}
    for key, name in (("io", "IO"), ("s", "S")):
        ds = dataset.make_adversarial_dataset(tok, base, name, construction=methods.default("adversarial")["construction"])
        end = _end(model(ds.tokens), ds)
        rows = range(len(ds))
        ld = end[rows, ds.io_tokens] - end[rows, ds.s_tokens]
        prob = torch.softmax(end.double(), dim=-1)[rows, ds.io_tokens]
        mine = {f"adversarial.{key}.logit_diff": ld.mean().item(), f"adversarial.{key}.io_prob": prob.mean().item(),
                f"adversarial.{key}.s_above_io": (ld <= 0).double().mean().item()}
        wrong |= {k: (x, v[k]["value"]) for k, x in mine.items() if not _close(x, v[k]["value"])}
    assert not wrong, f"(by hand, recorded): {wrong}"


def _auc_by_pairs(scores: list[float], positive: list[bool]) -> float:
    """ROC AUC as the Mann-Whitney statistic: over every (positive, negative) pair, 1 when the
    positive scores higher, 1/2 on a tie; their mean."""
    pos = [x for x, y in zip(scores, positive) if y]
    neg = [x for x, y in zip(scores, positive) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_chapter_9_every_methods_auc_by_pairs(built_book):
    """Every method's AUC against every reference, recomputed from the head scores the chapter
    recorded by counting pairs; the ACDC-style walk is among the methods scored."""
    v = _values(built_book, "09_automated_discovery")
    methods = {k.split(".")[1] for k in v if k.endswith(".head_scores")}
    assert {"attribution", "eap_heads", "acdc"} <= methods, methods
    refs = {k.removeprefix("autodiscovery.reference."): {tuple(h) for h in e["value"]}
            for k, e in v.items() if k.startswith("autodiscovery.reference.")}
    assert refs
    checked = 0
    for m in methods:
        grid = v[f"autodiscovery.{m}.head_scores"]["value"]
        heads = [(l, h) for l in range(len(grid)) for h in range(len(grid[l]))]
        scores = [grid[l][h] for l, h in heads]
        for ref, truth in refs.items():
            recorded = v[f"autodiscovery.{m}.{ref}.auc"]["value"]
            mine = _auc_by_pairs(scores, [hd in truth for hd in heads])
            assert abs(mine - recorded) < 1e-9, (m, ref, mine, recorded)
            checked += 1
    assert checked == len(methods) * len(refs)


def test_chapter_9_edge_auc_by_pairs_from_the_exported_file(built_book):
    """EAP's edge AUC against the planted edges, recomputed by counting pairs from the edge
    scores the chapter exported in MIB's file format (read as plain JSON) and the planted edge
    names it recorded."""
    v = _values(built_book, "09_automated_discovery")
    truth = set(v["edges.reference.planted"]["value"])
    exported = built_book / "results" / v["edges.mib_file.eap"]["value"]
    scored = json.loads(exported.read_text())["edges"]
    assert truth and truth <= set(scored), "every planted edge is an edge of the exported graph"
    names = sorted(scored)
    mine = _auc_by_pairs([abs(scored[n]["score"]) for n in names], [n in truth for n in names])
    recorded = v["edges.eap.edge_auc_planted"]["value"]
    assert abs(mine - recorded) < 1e-6, (mine, recorded)


def _attention_from_end(model, ioi, to: str) -> torch.Tensor:
    """``[layer, head]``: the mean over prompts of the attention from END to position ``to``,
    read from ``hook_pattern`` by hand indexing."""
    L = model.cfg.n_layers
    pats = {}
    model.run_with_hooks(ioi.tokens, fwd_hooks=[
        (f"blocks.{l}.attn.hook_pattern", lambda p, hook, l=l: pats.__setitem__(l, p.detach().clone()))
        for l in range(L)])
    out = torch.zeros(L, model.cfg.n_heads)
    for l in range(L):
        for i in range(len(ioi)):
            out[l] += pats[l][i, :, int(ioi.pos["END"][i]), int(ioi.pos[to][i])].float().cpu()
    return out / len(ioi)


@torch.no_grad()
def test_chapters_2_and_3_attention_of_the_found_heads_by_hand(built_book):
    """Chapter 2's mean attention END->IO of its Name Movers and chapter 3's END->S2 of its
    S-Inhibition heads, from the attention patterns of one plain forward pass."""
    mine, rec = {}, {}
    for chapter, cls, key, to in (("02_name_movers", "Name Mover", "name_movers.attention_to_io", "IO"),
                                  ("03_s_inhibition", "S-Inhibition", "s_inhibition.attention_to_s2", "S2")):
        v = _values(built_book, chapter)
        heads = [tuple(h) for h in v[f"classes.{cls}"]["value"]]
        assert heads, f"no {cls} recorded on the book's model"
        s = v[key]["settings"]
        model = _model(s["model"])
        ioi, _ = _prompts(s)
        att = _attention_from_end(model, ioi, to)
        mine[key] = sum(float(att[l, h]) for l, h in heads) / len(heads)
        rec[key] = v[key]["value"]
    wrong = {k: (x, rec[k]) for k, x in mine.items() if not _close(x, rec[k])}
    assert not wrong, f"(by hand, recorded): {wrong}"


@torch.no_grad()
def test_chapters_3_to_5_knockouts_by_hand(built_book):
    """Each class mean-ablated as its chapter knocks it out: chapter 3's S-Inhibition heads at
    END; chapter 4's Induction, Duplicate Token and both, and chapter 5's Previous Token heads,
    at every position."""
    v3, v4, v5 = (_values(built_book, c) for c in
                  ("03_s_inhibition", "04_induction_and_duplicate_token", "05_previous_token"))
    heads = lambda v, cls: [tuple(h) for h in v[f"classes.{cls}"]["value"]]  # noqa: E731
    every = lambda hs: {h: None for h in hs}  # noqa: E731
    cases = [(v3, "knockout.s_inhibition.at_end.logit_diff", {h: ["END"] for h in heads(v3, "S-Inhibition")}),
             (v4, "knockout.induction.logit_diff", every(heads(v4, "Induction"))),
             (v4, "knockout.duplicate_token.logit_diff", every(heads(v4, "Duplicate Token"))),
             (v4, "knockout.induction_and_duplicate_token.logit_diff",
              every(heads(v4, "Induction") + heads(v4, "Duplicate Token"))),
             (v5, "knockout.previous_token.logit_diff", every(heads(v5, "Previous Token")))]
    mine, rec = {}, {}
    for v, key, spec in cases:
        assert spec and key in v, f"{key}: no heads or nothing recorded on the book's model"
        s = v[key]["settings"]
        model = _model(s["model"])
        ioi, abc = _prompts(s)
        mask = torch.zeros(model.cfg.n_layers, len(ioi), ioi.tokens.shape[1], model.cfg.n_heads, dtype=torch.bool)
        for (l, h), names in spec.items():
            if names is None:
                mask[l, :, :, h] = True
            else:
                for i in range(len(ioi)):
                    for name in names:
                        mask[l, i, int(ioi.pos[name][i]), h] = True
        mine[key] = _mean_ablated_logit_diff(model, ioi, abc, mask)
        rec[key] = v[key]["value"]
    wrong = {k: (x, rec[k]) for k, x in mine.items() if not _close(x, rec[k])}
    assert not wrong, f"(by hand, recorded): {wrong}"
