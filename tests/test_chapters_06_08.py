"""What chapters 6-8 and the scorecard rely on: the circuit assembler, the knockouts' claims on
ioi-tiny, the empty circuit, the adversarial prompts, and the scorecard's loud failure."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

import tiny_models as tm
from ioi_helpers import ablation, dataset, discovery, metrics, models, paper, pipeline, results
from conftest import REPO


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def head_class(name, heads, kept_at):
    return discovery.HeadClass(name, heads, "test", pd.DataFrame(), torch.zeros(3, 4), "logits",
                               1.0, 0.0, kept_at)


# ----------------------------------------------------------------------------- the circuit


def test_circuit_keeps_each_head_at_its_class_position():
    classes = {"Name Mover": head_class("Name Mover", [(2, 1), (2, 0)], "END"),
               "Induction": head_class("Induction", [(1, 2)], "S2"),
               "Previous Token": head_class("Previous Token", [(0, 3)], "S1+1"),
               "Duplicate Token": head_class("Duplicate Token", [(1, 2)], "S2"),
               "Backup Name Mover": head_class("Backup Name Mover", [(1, 2)], "END"),
               "S-Inhibition": head_class("S-Inhibition", [], "END")}
    circ = discovery.circuit(classes)
    assert circ == {(0, 3): ["S1+1"], (1, 2): ["S2", "END"], (2, 0): ["END"], (2, 1): ["END"]}
    assert discovery.circuit(list(classes.values())) == circ
    assert discovery.circuit({}) == {}


def test_faithfulness_of_the_empty_circuit_is_the_fully_ablated_model():
    """F(C) of C = {} is the run with every head knocked out everywhere (the full set's
    faithfulness = 1 is test_ablation.test_full_circuit_is_the_model)."""
    model = tm.random_model()
    ds, abc = tm.datasets(12, seed=7)
    values = ablation.ablation_values(model, ds, abc, "mean")
    f = ablation.faithfulness(model, ds, values, {})
    every = ~ablation.knockout_mask(model, ds, [])
    assert torch.allclose(f.circuit_ld, ablation.ablated_logit_diff(model, ds, every, values), atol=1e-6)
    # independent: each attention layer's output replaced by its p_ABC group mean (hook_attn_out)
    _, cache = model.run_with_cache(abc.tokens)
    ref = []
    for i in range(len(ds)):
        n = int(ds.lengths[i])
        members = [j for j in range(len(abc)) if abc.groups[j] == ds.groups[i]]
        hooks = [(f"blocks.{l}.hook_attn_out",
                  lambda x, hook, m=cache[f"blocks.{l}.hook_attn_out"][members, :n].mean(0): m[None])
                 for l in range(3)]
        with torch.no_grad():
            logits = model.run_with_hooks(ds.tokens[i:i + 1, :n], fwd_hooks=hooks)
        ref.append(logits[0, n - 1, ds.io_tokens[i]] - logits[0, n - 1, ds.s_tokens[i]])
    assert (f.circuit_ld - torch.stack(ref)).abs().max().item() < 1e-4
    assert abs(f.F_M - metrics.logit_diff(model(ds.tokens), ds).mean().item()) < 1e-5


# ----------------------------------------------------------------------------- ioi-tiny


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    model = tm.ioi_tiny()
    mp = pytest.MonkeyPatch()
    mp.setenv(discovery.CACHE_ENV_VAR, str(tmp_path_factory.mktemp("cache")))
    yield discovery.Setup(model, n_prompts=100, seed=0)
    mp.undo()


def test_backup_name_movers_on_ioi_tiny_are_recomputed_the_same_and_compensate(tiny_setup, tmp_path,
                                                                             monkeypatch):
    setup = tiny_setup
    classes = discovery.all_classes(setup)
    nm, backup = classes["Name Mover"].heads, classes["Backup Name Mover"].heads
    assert nm, "ioi-tiny has Name Movers (chapter 2)"
    # recomputed from scratch (an empty cache), not unpickled: the same classes
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path / "again"))
    again = discovery.all_classes(discovery.Setup(setup.model, n_prompts=100, seed=0))
    assert list((tmp_path / "again").glob("path_patch-*.pt")), "the second call did not recompute"
    assert {k: c.heads for k, c in again.items()} == {k: c.heads for k, c in classes.items()}
    others = {h for k, c in classes.items() if k != "Backup Name Mover" for h in c.heads}
    assert not set(backup) & others
    assert backup, "ioi-tiny shows Backup Name Movers after the knockout"
    # Compensation (Sec. 3.4): once the Name Movers are knocked out, the Backup Name Movers'
    # direct effect on the logits grows (a larger drop when each is patched), by a clear margin.
    cls = classes["Backup Name Mover"]
    after = [float(cls.effect[h]) for h in backup]
    before = [float(cls.extra["before"][h]) for h in backup]
    assert all(a < b for a, b in zip(after, before)), (after, before)
    assert sum(after) < 1.5 * sum(before)
    ioi, abc = setup.ioi, setup.abc
    values = ablation.ablation_values(setup.model, ioi, abc, "mean")
    ld = {name: ablation.ablated_logit_diff(setup.model, ioi, ablation.knockout_mask(setup.model, ioi, heads),
                                            values).mean().item()
          for name, heads in (("model", []), ("nm", nm), ("nm+backup", nm + backup))}
    # Chapter 6's claims, as they hold on ioi-tiny: knocking out the Name Movers barely moves the
    # logit diff (the paper: -5%; here it even rises a little), while knocking out the Backup
    # Name Movers on top removes much of it: they carry the task once the Name Movers are gone.
    assert abs(ld["nm"] - ld["model"]) < 0.1 * ld["model"]
    assert ld["nm+backup"] < ld["nm"] - 0.4 * ld["model"]


def _circuit_ld_by_hand(model, ds, abc, circ) -> torch.Tensor:
    """Per prompt: every head's hook_z replaced by its p_ABC template-group mean, except a
    circuit head at its kept positions (one forward per prompt, hooks written here)."""
    _, cache = model.run_with_cache(abc.tokens)
    out = []
    for i in range(len(ds)):
        n = int(ds.lengths[i])
        members = [j for j in range(len(abc)) if abc.groups[j] == ds.groups[i]]
        hooks = []
        for l in range(model.cfg.n_layers):
            mean = cache[f"blocks.{l}.attn.hook_z"][members, :n].mean(0)  # [pos, head, d_head]
            keep = torch.zeros(n, model.cfg.n_heads, dtype=torch.bool)
            for (hl, hh), names in circ.items():
                if hl == l:
                    for name in names:
                        keep[int(ds.pos[name][i]), hh] = True

            def ablate(z, hook, mean=mean, keep=keep):
                return torch.where(keep[None, :, :, None], z, mean[None])
            hooks.append((f"blocks.{l}.attn.hook_z", ablate))
        with torch.no_grad():
            logits = model.run_with_hooks(ds.tokens[i:i + 1, :n], fwd_hooks=hooks)
        out.append(logits[0, n - 1, ds.io_tokens[i]] - logits[0, n - 1, ds.s_tokens[i]])
    return torch.stack(out)


def test_circuit_on_ioi_tiny_keeps_more_than_the_empty_circuit(tiny_setup):
    """Chapter 7 on ioi-tiny: F(C) of its discovered circuit and of the empty circuit, each
    against a hand-written hook loop; the circuit keeps clearly more (measured: 0.39 vs 0.04 of
    the model's 3.25: ioi-tiny's circuit is far from complete, which the chapter reports)."""
    setup = tiny_setup
    circ = discovery.circuit(discovery.all_classes(setup))
    assert circ
    values = ablation.ablation_values(setup.model, setup.ioi, setup.abc, "mean")
    f = ablation.faithfulness(setup.model, setup.ioi, values, circ)
    empty = ablation.faithfulness(setup.model, setup.ioi, values, {})
    for got, c in ((f, circ), (empty, {})):  # the first 40 prompts; means over all p_ABC
        ref = _circuit_ld_by_hand(setup.model, setup.ioi[:40], setup.abc, c)
        assert (got.circuit_ld[:40] - ref).abs().max().item() < 1e-4
    assert f.F_C > empty.F_C + 0.1 * f.F_M


def test_chapter_7_completeness_table_equals_one_run_per_set(tiny_setup):
    """ablation.AblatedRuns, chapter 7's runs made once: its completeness table, whose sets share
    forwards, gives for every set K (random, class, empty, greedy) the F(C∖K) and F(M∖K) of one
    circuit_logit_diff / model_logit_diff run per set, K removed from M at its kept positions
    and everywhere; a run asked for twice is the same tensor."""
    setup = tiny_setup
    classes = discovery.all_classes(setup)
    circ = discovery.circuit(classes)
    model, ioi = setup.model, setup.ioi
    values = ablation.ablation_values(model, ioi, setup.abc, "mean")
    runs = ablation.AblatedRuns(model, ioi, values, "kept")
    table = runs.completeness_table(circ, {n: c.heads for n, c in classes.items()}, "full",
                                    n_random_sets=3, n_sets=1, n_steps=2, candidates=2)
    assert {"random", "class", "empty", "greedy"} <= set(table["kind"])
    for row in table.to_dict("records"):
        k = [tuple(int(x) for x in n.split(".")) for n in row["heads"].split()]
        c = ablation.circuit_logit_diff(model, ioi, values, circ, k).mean().item()
        m = ablation.model_logit_diff(model, ioi, values, k, circ, "kept" if k else "all").mean().item()
        m_all = ablation.model_logit_diff(model, ioi, values, k, circ, "all").mean().item()
        assert row["F(C∖K)"] == pytest.approx(c, abs=1e-4), row["K"]
        assert row["F(M∖K)"] == pytest.approx(m, abs=1e-4), row["K"]
        assert row["F(M∖K), K everywhere"] == pytest.approx(m_all, abs=1e-4), row["K"]
        assert row["incompleteness"] == pytest.approx(abs(row["F(C∖K)"] - row["F(M∖K)"]))
    assert runs.F_C(circ) is runs.F_C(circ) and runs.F_M() is runs.F_M([], circ)


# ----------------------------------------------------------------------------- adversarial prompts


@pytest.fixture(scope="module")
def tok():
    return models.get_tokenizer()


def test_adversarial_templates_have_a_sentence_before_s2():
    mixed = dataset.adversarial_templates("mixed")
    assert [t.group for t in mixed] == ["BABA0", "BABA1", "BABA2", "BABA3", "ABBA0", "ABBA1", "ABBA2", "ABBA3"]
    # of all 15 (0-based), the S2 clause follows a comma in 4 ("had a long argument, and
    # afterwards [B] said") and 5-9 ("After ..., [B] gave", "When ..., [B] decided", ...)
    with_break = [0, 1, 2, 3, 10, 11, 12, 13, 14]
    assert [t.group for t in dataset.adversarial_templates("all")] == (
        [f"BABA{i}" for i in with_break] + [f"ABBA{i}" for i in with_break])


@pytest.mark.parametrize("name", ["IO", "S"])
def test_extra_sentence_sits_after_the_first_sentence(tok, name):
    ds = dataset.make_ioi_dataset(tok, 24, template_set=dataset.adversarial_templates("all"), seed=3)
    adv = dataset.make_adversarial_dataset(tok, ds, name, construction="paper")
    sentences = [s.replace("[A]", "{}") for s in dataset.prompt_data()["extra_sentences_adversarial"]]
    for i, (p, q) in enumerate(zip(ds.prompts, adv.prompts)):
        named = p.io if name == "IO" else p.s
        first, rest = p.text.rsplit(". ", 1)  # the first sentence(s), then the S2 clause
        assert any(q.text == f"{first}. {s.format(named)} {rest}" for s in sentences), q.text
        row = adv.tokens[i].tolist()
        assert tok.decode([row[int(adv.pos["extra"][i])]]) == " " + named
        assert adv.pos["IO"][i] < adv.pos["extra"][i] < adv.pos["S2"][i]
        assert adv.pos["S1"][i] < adv.pos["extra"][i]
        assert tok.decode([row[int(adv.pos["S2"][i])]]) == " " + p.s
        assert tok.decode([row[int(adv.pos["IO"][i])]]) == " " + p.io
    assert torch.equal(adv.io_tokens, ds.io_tokens) and torch.equal(adv.s_tokens, ds.s_tokens)


def test_comma_templates_get_a_capitalised_clause(tok):
    t = next(t for t in dataset.templates("mixed") if "argument, and afterwards" in t.text)
    ds = dataset.make_ioi_dataset(tok, 4, template_set=[t], seed=1)
    adv = dataset.make_adversarial_dataset(tok, ds, "IO", construction="paper")
    for p, q in zip(ds.prompts, adv.prompts):
        assert q.text.startswith(p.text.split(", and afterwards")[0] + ", " + p.io)
        assert ". And afterwards " + p.s + " said to" in q.text


# advex.py (easy_transformer/), "Run automatic attacks": the five sentences with a leading space,
# and every ordered pair of them.
ADX_TEMPLATE = [" [A] had a good day.", " [A] was enjoying the situation.", " [A] was tired.",
                " [A] enjoyed being with a friend.", " [A] was an enthusiast person."]
DOUBLE_ADX_TEMPLATE = [x1 + x2 for x1 in ADX_TEMPLATE for x2 in ADX_TEMPLATE]


def gen_adv_by_tokens(tok, text: str, adv_temp: str) -> str:
    """advex.py's gen_adv for one prompt, token-based as the authors wrote it: find the token
    index of the last "." (else the last ",") as ioi_dataset.get_word_idxs does, turn it into a
    character index by joining the decoded tokens before it, and insert there."""
    toks = [tok.decode(t) for t in tok.encode(text, add_special_tokens=False)]
    idx = None
    for w in [",", "."]:  # the later word wins when present, as in get_word_idxs
        if w in text:
            idx = len(toks) - toks[::-1].index(w) - 1
    at = len("".join(toks[:idx]))
    assert text[at] in ".,"
    return text[: at + 1] + adv_temp + text[at + 1:]


@pytest.mark.parametrize("name", ["IO", "S"])
def test_adversarial_prompts_are_the_authors_gen_adv(tok, name):
    ds = dataset.make_ioi_dataset(tok, 42, template_set="mixed", seed=4)
    adv = dataset.make_adversarial_dataset(tok, ds, name)  # default: the code's construction
    seen = set()
    for i, (p, q) in enumerate(zip(ds.prompts, adv.prompts)):
        named = p.io if name == "IO" else p.s
        # the answer is part of the authors' sentence; our prompt stops before it
        want = [gen_adv_by_tokens(tok, p.text + " " + p.io, t.replace("[A]", named)) for t in DOUBLE_ADX_TEMPLATE]
        hit = [t for t, w in zip(DOUBLE_ADX_TEMPLATE, want) if w == q.text + " " + p.io]
        assert hit, q.text
        seen.add(hit[0])
        row = adv.tokens[i].tolist()
        assert tok.decode([row[int(adv.pos["extra"][i])]]) == " " + named
        assert tok.decode([row[int(adv.pos["extra2"][i])]]) == " " + named
        assert adv.pos["extra"][i] < adv.pos["extra2"][i] < adv.pos["S2"][i]
        assert tok.decode([row[int(adv.pos["S2"][i])]]) == " " + p.s
    assert len(seen) > 10  # pairs are drawn, not fixed
    assert {p.template.group for p in ds.prompts} == {t.group for t in dataset.templates("mixed")}


# ----------------------------------------------------------------------------- the scorecard


def write_results(directory: Path, monkeypatch, skip: str | None = None) -> None:
    monkeypatch.setenv(results.RESULTS_ENV_VAR, str(directory))
    by_chapter: dict[str, list[str]] = {}
    for key, spec in paper.NUMBERS.items():
        by_chapter.setdefault(spec["chapter"], []).append(key)
    for chapter, keys in by_chapter.items():
        results.start(chapter, "ioi-tiny", {"N": 10})
        for key in keys:
            if key != skip:
                value = paper.NUMBERS[key]["value"]
                results.record(chapter, key, None if value is None else value + 0.01, {"N": 10})
    results.record("06_backup_name_movers", "classes.Backup Name Mover", [[3, 1]], {})


def test_scorecard_builds_from_recorded_results_and_fails_loudly(tmp_path, monkeypatch):
    scorecard = REPO / "book" / "scorecard.py"
    write_results(tmp_path / "results", monkeypatch)
    out = pipeline.run_chapter(scorecard, {"model_name": "ioi-tiny", "results_dir": str(tmp_path / "results")},
                               tmp_path / "out")
    text = "".join(str(o.get("data", {}).get("text/html", "")) + str(o.get("text", ""))
                   for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs)
    assert "mlp0.knockout_logit_diff" not in text  # rows show claims, not keys
    assert paper.NUMBERS["circuit.faithfulness"]["claim"] in text
    # the class table's Backup row: the paper's list beside the recorded class (3.1), which is
    # missing every paper head and extra itself
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", text, flags=re.S) if ">Backup Name Mover<" in r]
    assert len(rows) == 1, rows
    cells = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0], flags=re.S)]
    paper_list = " ".join(paper.head_name(h) for h in paper.CIRCUIT["Backup Name Mover"])
    assert cells.count(paper_list) == 2  # the paper's list, and all of it missing
    assert "3.1" in cells  # discovered (and extra)
    from ioi_helpers import methods
    assert methods.construction_for("adversarial.io.logit_diff") in text  # each number's construction

    missing = "adversarial.io.s_above_io"
    write_results(tmp_path / "partial", monkeypatch, skip=missing)
    with pytest.raises(pipeline.ChapterError) as err:
        pipeline.run_chapter(scorecard, {"model_name": "ioi-tiny", "results_dir": str(tmp_path / "partial")},
                             tmp_path / "out2")
    assert missing in str(err.value) and "08_adversarial_examples" in str(err.value)
