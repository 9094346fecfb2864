# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Is it the circuit? Faithfulness, completeness, minimality
#
# Chapters 2-6 found seven classes of heads. Section 4 of the paper asks whether they *are*
# the mechanism, with three criteria computed on **knockouts** (mean ablation over p_ABC):
#
# * **Faithfulness**: the circuit alone, every other head knocked out, should do the task as
#   well as the model. F(M) is the model's mean logit difference, F(C) the circuit's (in the
#   run $C(x)$ every head outside C is knocked out), and faithfulness is their ratio:
#
#   $$
#   F(C) = \mathbb{E}_{x \sim p_{\text{IOI}}} \big[ \text{logit}(\text{IO}) - \text{logit}(\text{S})
#     \text{ in the run } C(x) \big],
#   $$
#
#   $$
#   \text{faithfulness} = \frac{F(C)}{F(M)}.
#   $$
#
#   For GPT-2 small the paper reports F(M) = 3.56 and F(C) ≈ 3.10: the circuit keeps
#   **87%** (a gap of 0.46).
# * **Completeness**: for any set K of circuit heads, removing K from the circuit and from
#   the model should hurt both equally; the *incompleteness* of K is
#
#   $$
#   \text{incompleteness}(K) = \big| F(C \setminus K) - F(M \setminus K) \big|.
#   $$
#
#   Random and class sets give small values; a greedy
#   search finds sets with up to **3.09** (Fig. 6): the circuit is not complete. (The authors'
#   saved greedy results, `pts/complete_xs.pt` / `complete_ys.pt`, give 3.47 instead; see the
#   Methods appendix.)
# * **Minimality**: every head $v$ of the circuit should matter for some K:
#
#   $$
#   \text{minimality}(v) = \big| F(C \setminus (K \cup \{v\})) - F(C \setminus K) \big|
#   $$
#
#   is **at least 1% of F(M)** for every head
#   (Fig. 20; e.g. 0.1: 1.30, 5.5: 1.15, 10.7: 0.94, 9.0 and 11.9: 0.04).
#
# These numbers depend on choices the paper makes once (mean ablation, kept positions, the
# p_ABC set, a ratio of means); Miller et al. (2024, *Transformer Circuit Faithfulness Metrics
# are not Robust*) showed how much faithfulness moves when they change, so this chapter measures
# that too.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # p_IOI prompts (and matched p_ABC) for every criterion (the authors' scripts: 100)
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # "mixed": BABA 1-7 + ABBA 1-7 (the authors' code); "all" for all 15 of each
ablation_method = "mean"  # the paper's knockout; "resample" or "zero" to change the headline numbers
# None below = the authors' value (completeness.py; ioi_helpers.methods, see the Methods appendix)
n_random_sets = None  # random K for completeness (the authors: 100), each head in with probability 1/2
greedy_n_sets = None  # greedy search (new_greedy_search): runs (the authors: 10)
greedy_n_steps = None  # steps per run (the authors: 10)
greedy_candidates = None  # heads tried per step (the authors: 10; 5 for the naive circuit)
abc_per_group = [1, 3]  # p_ABC prompts per template group for the mean (sensitivity), besides all
large_abc_factor = 2  # and an independent p_ABC set this many times larger
# shared by every chapter (discovery.setup_from): the classes' rule thresholds, as fractions
# of the clean logit diff; each class's chapter explains its value
name_mover_threshold = 0.05
s_inhibition_threshold = 0.05
induction_threshold = 0.03
previous_threshold = 0.03
backup_threshold = 0.02

# %% tags=["hide-input"]
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from ioi_helpers import ablation, dataset, discovery, layout, methods, models, paper, plots, results, tables

PAPER = {key: spec["value"] for key, spec in paper.NUMBERS.items()}  # the paper's numbers (ioi_helpers.paper)
MIN_FRACTION = PAPER["minimality.smallest_fraction"]  # Sec. 4.2: every head >= 1% of F(M)

torch.set_grad_enabled(False)
model = models.load_model(model_name)
tokenizer = models.get_tokenizer()
MODEL = model.ioi_model_name
CHAPTER = "07_circuit_evaluation"
GREEDY = methods.default("greedy")  # the authors' new_greedy_search parameters
n_random_sets = methods.default("random_sets")["n_sets"] if n_random_sets is None else n_random_sets
greedy_n_sets = GREEDY["n_sets"] if greedy_n_sets is None else greedy_n_sets
greedy_n_steps = GREEDY["n_steps"] if greedy_n_steps is None else greedy_n_steps
greedy_candidates_naive = GREEDY["candidates_naive"] if greedy_candidates is None else greedy_candidates
greedy_candidates = GREEDY["candidates"] if greedy_candidates is None else greedy_candidates
K_POSITIONS = methods.default("completeness_removal")["k_positions"]  # "kept": the authors' completeness.py
results.start(CHAPTER, MODEL, {"n_prompts": n_prompts, "seed": seed, "prepend_bos": prepend_bos,
                               "ablation": ablation_method, "greedy": [greedy_n_sets, greedy_n_steps,
                                                                       greedy_candidates]},
              calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))

# %% [markdown]
# ## The circuit, assembled from chapters 2-6
#
# Every class is recomputed through `ioi_helpers.discovery` with the rule its chapter printed
# (same model, N, seed and BOS setting; cached on disk). Each head is **kept at one position**,
# as in the paper's table: the Name Movers (all three kinds) and S-Inhibition heads at END,
# Induction and Duplicate Token heads at S2, Previous Token heads at S1+1. Everywhere else, and
# every head outside the circuit everywhere, is knocked out.
#
# **Which circuit is evaluated.** Where the paper's head indices name this model's heads (GPT-2
# small, and `gpt2-planted`, which plants the paper's heads at the paper's positions), this
# chapter evaluates **the authors' circuit list** (`paper.CIRCUIT`, the list that made the
# published numbers) and the circuit assembled from the discovered classes as a named
# **variant** beside it, with a table of the heads where the two differ. On any other model the
# paper's indices name unrelated heads, and the discovered circuit is the one evaluated
# (`layout.evaluated_circuit`). A head found in two classes: the authors' code keeps it at the
# position of the later class only (`layout.authors_kept`), this book's assembler at both; the
# heads where that matters are listed below.

# %%
setup = discovery.setup_from(model, globals())
classes = discovery.all_classes(setup)
evaluated = layout.evaluated_circuit(model, classes, discovery.circuit(classes))
circuit = evaluated.circuit
ioi, abc = setup.ioi, setup.abc

# %% tags=["hide-input"]
class_table = pd.DataFrame([{
    "class": name, "kept at": c.kept_at, "heads found": " ".join(paper.head_name(h) for h in c.heads) or "none",
    "paper (GPT-2 small)": " ".join(paper.head_name(h) for h in paper.CIRCUIT[name]),
    "rule": c.rule} for name, c in classes.items()])
display(class_table.style.hide(axis="index"))
n_total = model.cfg.n_layers * model.cfg.n_heads
if evaluated.source == "authors":
    display(Markdown(
        f"Evaluated below: **{evaluated.label}**, {len(circuit)} of the model's {n_total} heads. The classes "
        f"discovered above assemble a circuit of {len(evaluated.variant)} heads, evaluated as the variant "
        f"*discovered*" + (": **the same heads, kept at the same positions**, so every number below is its "
                           "number too." if evaluated.same else "; the classes where the two differ:")))
    if not evaluated.same:
        display(layout.differences(evaluated).style.hide(axis="index"))
    for note in evaluated.notes:  # a head found in two classes
        display(Markdown(f"- {note}."))
else:
    display(Markdown(f"The circuit has **{len(circuit)}** of the model's {n_total} heads (the paper: 26 of 144)."))
if not circuit:
    display(Markdown(
        f"**No class was found on {MODEL}**, so the circuit is empty: F(C) below is the model with "
        f"*every* head knocked out, and completeness and minimality have no heads to work with. The "
        f"evidence for each empty class is in its chapter (its effect heatmap and table)."))
results.record(CHAPTER, "circuit.evaluated", evaluated.source, setup.settings(), note=evaluated.label)
results.record(CHAPTER, "circuit.heads", [list(h) for h in circuit], setup.settings())
if getattr(model, "planted", None):  # the model's known truth, for the scorecard's class-by-class count
    results.record(CHAPTER, "truth.planted", {c: [list(h) for h in hs] for c, hs in model.planted.items()},
                   note="the heads the model was built with (model.planted)")

# %% [markdown]
# ## Faithfulness
#
# The knockout: a head's output at a position is replaced by its mean over the p_ABC prompts of
# the same template group, at that position (`ablation.ablation_values`). F is the mean
# logit difference over the prompts, and faithfulness the ratio of the two means.

# %% tags=["hide-input"]
values = ablation.ablation_values(model, ioi, abc, ablation_method, seed=seed)
# every ablated run of this chapter, made once (per-prompt logit diffs): F(C minus K), F(M minus K)
runs = ablation.AblatedRuns(model, ioi, values, K_POSITIONS)
F_C, F_M = runs.F_C, runs.F_M


def completeness_table(circ, classes_by_name, label, candidates=greedy_candidates):
    """F(C∖K), F(M∖K) and |F(C∖K) - F(M∖K)| for random, class, empty and greedy sets K; M∖K with
    K at its kept positions (default) and, as the variant, at every position."""
    return runs.completeness_table(circ, classes_by_name, label, n_random_sets, greedy_n_sets,
                                   greedy_n_steps, candidates, seed=seed)


# %%
faith = ablation.Faithfulness(F_M(), F_C(circuit))

# %% tags=["hide-input"]
settings = setup.settings() | {"ablation": f"{ablation_method} over p_ABC per template group and position",
                               "positions": "kept positions"}
results.record(CHAPTER, "circuit.F_M", faith.F_M, settings)
results.record(CHAPTER, "circuit.F_C", faith.F_C, settings)
results.record(CHAPTER, "circuit.faithfulness", faith.ratio, settings)
results.record(CHAPTER, "circuit.gap", faith.gap, settings)
P = paper.NUMBERS
display(Markdown(
    f"Settings: model **{MODEL}**, N = {len(ioi)}, templates '{setup.template_set}', BOS "
    f"{'prepended' if prepend_bos else 'not prepended'}, seed {seed}, **{ablation_method} ablation** over "
    f"the matched p_ABC prompts, circuit heads kept at their class's position. Paper: GPT-2 small, mean "
    f"ablation, no BOS."))
glue("eval_faithfulness", faith.ratio, display=False)
glue("eval_F_C", faith.F_C, display=False)
glue("eval_F_M", faith.F_M, display=False)
tables.table(pd.DataFrame([
    ("F(M), the model", faith.F_M, P["circuit.F_M"]["value"]),
    ("F(C), the circuit", faith.F_C, P["circuit.F_C"]["value"]),
    ("F(C) / F(M)", faith.ratio, P["circuit.faithfulness"]["value"]),
    ("F(M) - F(C)", faith.gap, P["circuit.gap"]["value"]),
], columns=["", MODEL, "paper (GPT-2 small)"]))

# %% [markdown]
# F(C) / F(M) = {glue:text}`eval_faithfulness:.2f` (F(C) = {glue:text}`eval_F_C:.2f`, F(M) =
# {glue:text}`eval_F_M:.2f`; paper, GPT-2 small: 0.87, 3.10 vs 3.56).

# %% [markdown]
# ### How much faithfulness depends on the ablation
#
# The same circuit, with one choice changed at a time (Miller et al. 2024 make this point for
# the IOI circuit):
#
# * **resample** instead of mean: each head gets its output on one random p_ABC prompt of the
#   same template, not the mean;
# * **all positions**: circuit heads are kept at every position, not only at their class's;
# * **size of the p_ABC set** the mean is taken over: 1 or a few prompts per template group, the
#   matched set, or an independent set several times larger;
# * **ratio of means vs mean of ratios**: the paper divides the mean logit differences; averaging
#   the per-prompt ratios F_i(C) / F_i(M) instead weighs prompts differently (and explodes when a
#   prompt's F_i(M) is near 0, so the median is shown as well).
#
# F(M) does not change (nothing is ablated in the model), so each row is one circuit run.

# %% tags=["hide-input"]
# The variants of the ablation (each: an id, a description, the method, the positions kept,
# the p_ABC prompts the mean is over, the ablation values and the circuit), the ratios, the chart.
def groups_first(ref, k):
    """The first k prompts of every template group of ``ref``."""
    seen, keep = {}, []
    for i, g in enumerate(ref.groups):
        if seen.get(g, 0) < k:
            seen[g] = seen.get(g, 0) + 1
            keep.append(i)
    return ref[keep]


def ratio_stats(c_ld):
    r = c_ld / faith.model_ld
    return {"F(C)": c_ld.mean().item(), "ratio of means (paper)": c_ld.mean().item() / faith.F_M,
            "mean of ratios": r.mean().item(), "median of ratios": r.median().item()}


def ablation_variants():
    """The paper's ablation and the variants, one choice changed at a time."""
    matched = f"matched ({len(abc)})"
    variants = [  # id, description, ablation, positions kept, p_ABC prompts, values, circuit
        ("paper", "mean over matched p_ABC, kept positions (the paper's)", "mean", "kept", matched,
         values if ablation_method == "mean" else ablation.ablation_values(model, ioi, abc, "mean"), circuit),
        ("resample", "resample, kept positions", "resample", "kept", matched,
         values if ablation_method == "resample" else ablation.ablation_values(model, ioi, abc, "resample", seed=seed),
         circuit),
    ]
    variants.append(("all_positions", "mean, circuit heads kept at all positions", "mean", "all", matched,
                     variants[0][5], {h: None for h in circuit}))
    for k in abc_per_group:
        ref = groups_first(abc, k)
        variants.append((f"abc_{k}_per_group", f"mean over {k} p_ABC prompt(s) per template group", "mean", "kept",
                         f"{len(ref)}", ablation.ablation_values(model, ioi, ref, "mean"), circuit))
    big_ioi = dataset.make_ioi_dataset(tokenizer, large_abc_factor * n_prompts, template_set=setup.template_set,
                                       seed=seed + 1, prepend_bos=prepend_bos)
    big_abc = dataset.make_abc_dataset(tokenizer, big_ioi)
    variants.append((f"abc_x{large_abc_factor}", f"mean over an independent p_ABC set {large_abc_factor}x larger",
                     "mean", "kept", f"{len(big_abc)}", ablation.ablation_values(model, ioi, big_abc, "mean"),
                     circuit))
    return variants


def sensitivity_chart(sensitivity, variants):
    """Bars of F(C)/F(M) per ablation choice (adds the short names to ``sensitivity``)."""
    SHORT = {"paper": "mean (paper)", "resample": "resample", "all_positions": "all positions kept",
             f"abc_x{large_abc_factor}": f"p_ABC x{large_abc_factor}",
             **{f"abc_{k}_per_group": f"p_ABC: {k} per group" for k in abc_per_group}}
    sensitivity["short"] = [SHORT[v[0]] for v in variants]
    return plots.bar_chart(sensitivity.rename(columns={"short": "ablation choice"}), x="ablation choice",
                           y="ratio of means (paper)", horizontal=True,
                           title=f"Faithfulness F(C)/F(M) under different ablations ({MODEL}, N={len(ioi)})",
                           tooltip=["variant", "F(C)", "ratio of means (paper)", "mean of ratios",
                                    "median of ratios"])


# %%
variants = ablation_variants()  # (id, label, method, positions, p_ABC, values, circuit)
sens_rows = [{"variant": label, "ablation": method, "positions kept": positions,
              "p_ABC prompts in the mean": ref_size,
              **ratio_stats(F_C(circ, vals=vals))}
             for key, label, method, positions, ref_size, vals, circ in variants]
sensitivity = pd.DataFrame(sens_rows)
display(sensitivity.style.format(precision=3).hide(axis="index"))
plots.show(sensitivity_chart(sensitivity, variants))

# %% tags=["hide-input"]
for (key, label, method, positions, ref_size, vals, circ), row in zip(variants, sens_rows):
    results.record(CHAPTER, f"circuit.faithfulness_sensitivity.{key}", row["ratio of means (paper)"],
                   settings | {"ablation": method, "positions": positions, "p_ABC": ref_size})
spread = sensitivity["ratio of means (paper)"].max() - sensitivity["ratio of means (paper)"].min()
glue("eval_sensitivity_min", float(sensitivity["ratio of means (paper)"].min()), display=False)
glue("eval_sensitivity_max", float(sensitivity["ratio of means (paper)"].max()), display=False)
glue("eval_sensitivity_spread", float(spread), display=False)

# %% [markdown]
# Across these choices faithfulness ranges from {glue:text}`eval_sensitivity_min:.2f` to
# {glue:text}`eval_sensitivity_max:.2f` (a spread of {glue:text}`eval_sensitivity_spread:.2f`);
# the headline number above is one point in that range.

# %% [markdown]
# ## Completeness
#
# Three families of sets K (the paper's Sec. 4.1), built as the authors' `completeness.py`
# builds them (see the Methods appendix):
#
# * **random** subsets of the circuit, each head in with probability 1/2 (the authors: 100 sets);
# * each **class**, grouped as the authors' circuit dict groups them: the Backup Name Movers
#   are part of the Name Movers, so there are 6 class sets (the paper's 7-class grouping is
#   added as rows of its own where it differs);
# * sets found by a **greedy search** (`new_greedy_search`): 10 runs of 10 steps; each step draws
#   10 heads (5 for the naive circuit) from C ∖ K and adds the one that most increases
#   |F(C ∖ K) − F(M ∖ K)|, if it does. It runs on the same prompts as everything else and its
#   scores are the ones reported (no re-scoring).
#
# **Removing K.** From the circuit, K's heads are knocked out everywhere. From the model, the
# authors' code knocks them out **only at their kept positions** (END, S2 or S1+1: it removes
# the circuit's (head, position) nodes). That is the default here; the table also gives
# F(M ∖ K) and the incompleteness with K knocked out of the model at every position, the
# other reading of the paper's text (which does not say which).

# %% tags=["hide-input"]
display(Markdown(f"Greedy search: **{greedy_n_sets} run(s) x {greedy_n_steps} steps x {greedy_candidates} "
                 f"candidates** ({greedy_candidates_naive} for the naive circuit) on the same {len(ioi)} prompts; "
                 f"{n_random_sets} random sets. The authors: {GREEDY['n_sets']} x {GREEDY['n_steps']} x "
                 f"{GREEDY['candidates']} ({GREEDY['candidates_naive']}), N = 100, "
                 f"{methods.default('random_sets')['n_sets']} random sets."))

# %%
class_heads = evaluated.classes  # the authors' classes, or the discovered ones
comp = completeness_table(circuit, class_heads, "full")  # random, class, greedy sets K
greedy_best = comp[comp["kind"] == "greedy"]["incompleteness"].max()
plots.show(plots.scatter_with_diagonal(
    comp, x="F(M∖K)", y="F(C∖K)", color="kind",
    title=f"Completeness ({MODEL}, N={len(ioi)}): on the diagonal, complete for K",
    tooltip=["K", "heads", "F(C∖K)", "F(M∖K)", "incompleteness"]))

# %% tags=["hide-input"]
comp_settings = settings | {"construction": "; ".join(methods.METHODS[k].construction for k in
                                                      ("greedy", "completeness_removal", "completeness_classes"))}
results.record(CHAPTER, "circuit.greedy_incompleteness", float(greedy_best),
               comp_settings | {"K": f"greedy {greedy_n_sets}x{greedy_n_steps}x{greedy_candidates}"},
               note="" if circuit else "empty circuit: every K is empty, the score is |F(C) - F(M)|")
display(Markdown("**K removed from the model at its kept positions (default, the authors' code) vs at every "
                 "position (variant)**, largest incompleteness per kind of set:"))
display(comp.groupby("kind")[["incompleteness", "incompleteness, K everywhere"]].max().round(3))
for kind in ("random", "class"):
    sub = comp[comp["kind"] == kind]["incompleteness"]
    results.record(CHAPTER, f"circuit.{kind}_incompleteness_max", float(sub.max()) if len(sub) else None, settings)
# greedy runs that end on the same set K read as one row, with the number of runs
ranked = comp.assign(K=comp["K"].mask(comp["kind"] == "greedy", "greedy"))
display(tables.table(ranked.sort_values("incompleteness", ascending=False).drop(columns="circuit"),
                     collapse=True, head=10))
# every set K of the full circuit and its scores, as the table above has them (for the oracle tests)
_ = results.record(CHAPTER, "completeness.sets", [
    {"K": r["K"], "kind": r["kind"], "heads": [[int(x) for x in n.split(".")] for n in r["heads"].split()],
     "F_C_minus_K": r["F(C∖K)"], "F_M_minus_K": r["F(M∖K)"], "incompleteness": r["incompleteness"],
     "F_M_minus_K_everywhere": r["F(M∖K), K everywhere"]} for r in comp.to_dict("records")],
    comp_settings | {"k_positions": K_POSITIONS})

# %% [markdown]
# ## Minimality
#
# For each head v the paper picks a set K (mostly other heads of v's class, since heads
# of one class back each other up) and reports |F(C ∖ (K ∪ {v})) − F(C ∖ K)|
# (its Fig. 20). The authors' code that computes it, `minimality.py`, defines K: v's
# class, except for the Name Movers (Backup Name Movers included), where K is the heads listed
# before v in their order of importance, and four special cases (9.0 and 11.9: all eleven Name
# Movers and both Negative Name Movers; 5.8 and 5.9: the two Negative Name Movers). Where the
# paper's head layout holds (GPT-2 small, `gpt2-planted`) those sets are used as they are, on
# the authors' circuit, with ARENA's sets (which differ for the Backup Name Movers) beside
# them (`layout.minimality_k`). On another model the same rule is applied to its own classes
# (`ablation.ordered_class_k`, Name Movers ordered by the size of their effect, the Backup
# Name Movers after them), with plain same-class K (`ablation.same_class_k`) beside it.

# %% tags=["hide-input"]
def by_importance(name):
    """A class's heads, largest drop first (the authors list their Name Movers "by importance")."""
    c = classes.get(name)
    return sorted(c.heads, key=lambda h: float(c.effect[h])) if c and c.heads else []


found_heads = {n: c.heads for n, c in classes.items() if c.heads}  # the discovered classes
generic = ablation.ordered_class_k({"Name Mover": by_importance("Name Mover") + by_importance("Backup Name Mover"),
                                    **{n: h for n, h in found_heads.items()
                                       if n not in ("Name Mover", "Backup Name Mover")}})
plain = ablation.same_class_k(found_heads)

# %%
K = layout.minimality_k(model, circuit, generic, plain,
                        methods.default("minimality_k")["k_sets"],
                        methods.variant("minimality_k")["k_sets"])
k_source, variant_name = K["source"], K["variant_name"]
mini, mini_var = (  # under K's sets, and under the variant's
    ablation.minimality(model, ioi, values, circuit, K[which], progress=False)
    if circuit else {} for which in ("k", "variant"))

# %% tags=["hide-input"]
mini_df = pd.DataFrame([{"head": paper.head_name(v), "class": next(n for n, hs in class_heads.items() if v in hs),
                         "K": " ".join(paper.head_name(h) for h in r["K"]) or "none",
                         "score": r["score"], "fraction of F(M)": r["relative"],
                         f"K ({variant_name})": " ".join(paper.head_name(h) for h in mini_var[v]["K"]) or "none",
                         f"score ({variant_name})": mini_var[v]["score"]} for v, r in mini.items()])
settings_k = settings | {"K": k_source, "construction": methods.METHODS["minimality_k"].construction}
results.record(CHAPTER, "minimality.k_sets", methods.default("minimality_k")["k_sets"] if K["authors"] else "own classes",
               settings_k)
for v, r in mini.items():
    results.record(CHAPTER, f"minimality.ours.{paper.head_name(v)}", r["score"], settings_k)
results.record(CHAPTER, "minimality.ours_k",  # each head's K (for the oracle tests)
               {paper.head_name(v): [list(h) for h in r["K"]] for v, r in mini.items()}, settings_k)
smallest = float(mini_df["fraction of F(M)"].min()) if len(mini_df) else None
results.record(CHAPTER, "minimality.smallest_fraction", smallest, settings_k,
               note="" if len(mini_df) else "empty circuit: no head to score")
paper_heads = ["0.1", "5.5", "10.7", "9.0", "11.9"]
for name in paper_heads:
    key = f"minimality.{name}"
    if models.has_paper_layout(model):  # the paper's head indices name this model's heads
        head = tuple(int(x) for x in name.split("."))
        results.record(CHAPTER, key, mini[head]["score"] if head in mini else None, settings_k,
                       note="" if head in mini else "this head is not in the circuit evaluated here")
    else:
        results.record(CHAPTER, key, None, settings,
                       note=f"the paper's head {name} has no counterpart in {MODEL}: its head layout is not "
                            f"the paper's; this model's own scores are under minimality.ours.*")

if len(mini_df):
    ours = mini_df.sort_values("score", ascending=False).assign(source=f"{MODEL} (K: {k_source})")
    ours_chart = plots.bar_chart(ours, x="head", y="score", color="class",
                                 title=f"Minimality per head, {MODEL} (dashed: {MIN_FRACTION:.0%} of F(M))",
                                 tooltip=["head", "class", "K", "score", "fraction of F(M)"])
    one_percent = alt.Chart(pd.DataFrame({"score": [MIN_FRACTION * abs(faith.F_M)]})).mark_rule(
        strokeDash=[4, 4], color="#555").encode(y="score:Q")
    ours_chart = ours_chart + one_percent
    paper_df = pd.DataFrame([{"head": n, "score": P[f"minimality.{n}"]["value"]} for n in paper_heads])
    paper_chart = plots.bar_chart(paper_df, x="head", y="score",
                                  title="Paper, GPT-2 small (Fig. 20, the five heads quoted)")
    plots.show(alt.vconcat(ours_chart, paper_chart))  # one above the other: the column
    display(tables.table(mini_df.sort_values("score", ascending=False)))
else:
    display(Markdown(f"No head to score: the circuit found on {MODEL} is empty."))

# %% [markdown]
# ## A naive circuit, for contrast
#
# The paper contrasts its circuit with a **naive circuit of 13 heads**, whose completeness is
# much worse. In the authors' code (`ioi_circuit_extraction.py`, `NAIVE`) it is: Name Movers
# 9.6, 9.9, 10.0; S-Inhibition 7.3, 7.9, 8.6, 8.10; Induction **5.5 and 5.9 only**; Duplicate
# Token **3.0 and 0.10 only**; Previous Token 2.2, 4.11; no Negative or Backup Name Movers.
# Where the paper's head layout holds (GPT-2 small, `gpt2-planted`) that list is used as it is
# (`layout.naive_circuit`). On another model its indices name unrelated heads,
# so the comparable naive circuit is made of the classes found by the **first path-patching
# steps** (chapters 2-5), without the Negative and Backup Name Movers, the two classes one only
# finds by looking at what compensates. Its greedy search draws 5 candidates per step, as the
# authors' does for the naive circuit.

# %%
naive_classes, naive, naive_label = layout.naive_circuit(model, classes)
naive_faith = ablation.Faithfulness(F_M(), F_C(naive))
naive_comp = completeness_table(naive, naive_classes, "naive",
                                candidates=greedy_candidates_naive)
naive_greedy = naive_comp[naive_comp["kind"] == "greedy"]["incompleteness"].max()

# %% tags=["hide-input"]
results.record(CHAPTER, "circuit.naive.faithfulness", naive_faith.ratio, settings | {"naive circuit": naive_label})
results.record(CHAPTER, "circuit.naive.heads", [list(h) for h in naive], settings, note=naive_label)
results.record(CHAPTER, "circuit.naive.greedy_incompleteness", float(naive_greedy),
               comp_settings | {"K": f"greedy {greedy_n_sets}x{greedy_n_steps}x{greedy_candidates_naive}",
                                "naive circuit": naive_label})
contrast = pd.DataFrame([
    {"circuit": f"full: {evaluated.label}", "heads": len(circuit), "F(C)": faith.F_C, "F(C)/F(M)": faith.ratio,
     "largest greedy incompleteness": greedy_best,
     "largest class incompleteness": comp[comp["kind"] == "class"]["incompleteness"].max()},
    {"circuit": naive_label, "heads": len(naive), "F(C)": naive_faith.F_C,
     "F(C)/F(M)": naive_faith.ratio, "largest greedy incompleteness": naive_greedy,
     "largest class incompleteness": naive_comp[naive_comp["kind"] == "class"]["incompleteness"].max()},
])
display(contrast.style.format(precision=3).hide(axis="index"))
both = pd.concat([comp, naive_comp])
plots.show(plots.scatter_with_diagonal(
    both, x="F(M∖K)", y="F(C∖K)", color="circuit",
    title="Completeness of the full and the naive circuit (all sets K)",
    tooltip=["circuit", "K", "heads", "F(C∖K)", "F(M∖K)", "incompleteness"]))

# %% [markdown]
# ## The discovered circuit, as a variant
#
# Where the authors' circuit is the headline (the paper's head layout), the circuit assembled
# from the classes this book discovered is evaluated the same way: faithfulness, completeness
# (random, class and greedy sets K) and minimality (the authors' rule on its own classes, as
# on a model without the paper's layout). When the two are the same heads kept at the same
# positions, the numbers above are its numbers and nothing is recomputed. On a model without
# the paper's layout the discovered circuit *is* the circuit above.

# %%
VARIANT = evaluated.variant is not None and not evaluated.same
if VARIANT:
    var = evaluated.variant
    var_faith = ablation.Faithfulness(F_M(), F_C(var))
    var_comp = completeness_table(var, evaluated.variant_classes, "discovered")
    var_mini = (ablation.minimality(model, ioi, values, var, generic, progress=False)
                if var else {})

# %% tags=["hide-input"]
if VARIANT:
    var_greedy = float(var_comp[var_comp["kind"] == "greedy"]["incompleteness"].max())
    var_smallest = min((r["relative"] for r in var_mini.values()), default=None)
    var_settings = settings | {"circuit": "discovered (chapters 2-6)", "K": "the authors' rule on its own classes"}
    results.record(CHAPTER, "circuit.discovered.F_C", var_faith.F_C, var_settings)
    results.record(CHAPTER, "circuit.discovered.faithfulness", var_faith.ratio, var_settings)
    results.record(CHAPTER, "circuit.discovered.greedy_incompleteness", var_greedy, var_settings)
    results.record(CHAPTER, "minimality.discovered.smallest_fraction", var_smallest, var_settings)
    display(Markdown("The classes where the discovered circuit differs from the authors':"))
    display(layout.differences(evaluated).style.hide(axis="index"))
    display(pd.DataFrame([
        {"circuit": name, "heads": len(c), "F(C)": f.F_C, "F(C)/F(M)": f.ratio,
         "largest class incompleteness": t[t["kind"].str.startswith("class")]["incompleteness"].max(),
         "largest greedy incompleteness": t[t["kind"] == "greedy"]["incompleteness"].max(),
         "smallest minimality (fraction of F(M))": m}
        for name, c, f, t, m in ((evaluated.label, circuit, faith, comp, smallest),
                                 ("discovered (variant)", var, var_faith, var_comp, var_smallest))])
            .style.format(precision=3).hide(axis="index"))
elif evaluated.variant is not None:
    display(Markdown(f"The discovered circuit is **the authors' circuit**: the same {len(circuit)} heads, kept "
                     "at the same positions. Every number above is its number too."))
else:
    display(Markdown(f"On {MODEL} the discovered circuit is the circuit evaluated above."))
_ = results.record(CHAPTER, "circuit.discovered.same_as_authors",
                   evaluated.same if evaluated.variant is not None else None, setup.settings(),
                   note="" if evaluated.variant is not None else "no authors' circuit on this model's layout")

# %% [markdown]
# ## Comparison with the paper and takeaway

# %% tags=["hide-input"]
rows = [(P[k]["claim"], P[k]["value"], v) for k, v in (
    ("circuit.F_M", faith.F_M), ("circuit.F_C", faith.F_C), ("circuit.faithfulness", faith.ratio),
    ("circuit.gap", faith.gap), ("circuit.greedy_incompleteness", greedy_best),
    ("minimality.smallest_fraction", smallest))]
display(pd.DataFrame(rows, columns=["claim", "paper (GPT-2 small)", MODEL]).style.format(precision=3).hide(axis="index"))
display(Markdown(
    f"Settings: model {MODEL}, circuit: {evaluated.label}, N = {len(ioi)}, BOS {prepend_bos}, {ablation_method} ablation over p_ABC per "
    f"template group and position; K removed from M at its kept positions (the authors' completeness.py); "
    f"class sets grouped as the authors' (Backup Name Movers inside the Name Movers); greedy "
    f"{greedy_n_sets}x{greedy_n_steps}x{greedy_candidates} on the same prompts; minimality K: {k_source}."))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))

# %% tags=["hide-input"]
WHAT = (f"The authors' circuit, evaluated on **{MODEL}**, has" if evaluated.source == "authors"
        else f"The circuit found on **{MODEL}** has")
if setup.does_task:  # metrics.does_task, as in every chapter
    text = [f"{WHAT} {len(circuit)} heads. It keeps **{faith.ratio:.0%}** of the "
            f"model's logit difference (F(C) = {faith.F_C:.2f} vs F(M) = {faith.F_M:.2f}; paper, GPT-2 small: "
            f"{PAPER['circuit.faithfulness']:.0%}, {PAPER['circuit.F_C']:.2f} vs {PAPER['circuit.F_M']:.2f})."]
else:
    text = [f"{WHAT} {len(circuit)} heads. The model itself does not do the task "
            f"(F(M) = {faith.F_M:.2f}, F(C) = {faith.F_C:.2f}), so the ratio F(C)/F(M) = {faith.ratio:.2f} "
            f"means nothing here (paper, GPT-2 small: {PAPER['circuit.faithfulness']}, {PAPER['circuit.F_C']:.2f} vs "
            f"{PAPER['circuit.F_M']:.2f})."]
text.append(f"Changing the ablation moves faithfulness between {sensitivity['ratio of means (paper)'].min():.2f} and "
            f"{sensitivity['ratio of means (paper)'].max():.2f}.")
if circuit:
    worst_class = comp[comp["kind"] == "class"]["incompleteness"].max()
    text.append(f"Completeness: the largest incompleteness is {comp[comp['kind'] == 'random']['incompleteness'].max():.2f} "
                f"for random sets, {worst_class:.2f} for class sets and **{greedy_best:.2f}** for greedy sets "
                f"(paper: small, small, up to {PAPER['circuit.greedy_incompleteness']})" +
                (" — as in the paper, a search finds sets the circuit does not account for."
                 if greedy_best > max(worst_class, 0.1 * abs(faith.F_M)) else "."))
    below = mini_df[mini_df["fraction of F(M)"] < MIN_FRACTION]["head"].tolist()
    text.append(f"Minimality: the smallest score is {smallest:.1%} of F(M) (paper: every head at least "
                f"{MIN_FRACTION:.0%}); " + (f"heads below {MIN_FRACTION:.0%}: {', '.join(below)}." if below else
                                             f"every head passes {MIN_FRACTION:.0%}."))
    text.append(f"The naive circuit ({len(naive)} heads) keeps {naive_faith.ratio:.0%} and its greedy "
                f"incompleteness reaches {naive_greedy:.2f}, against {greedy_best:.2f} for the full circuit.")
    nnm_heads = class_heads.get("Negative Name Mover", [])
    without_nnm = runs.F_M(nnm_heads, circuit).mean().item() if nnm_heads else None
    if naive_faith.ratio > 1 and nnm_heads and without_nnm > faith.F_M:
        text.append(f"It keeps more than the whole model because it leaves out the Negative Name Movers, "
                    f"which lower the logit difference: the model without them gives "
                    f"{without_nnm:.2f} instead of {faith.F_M:.2f}.")
    elif naive_faith.ratio > 1:
        text.append("It keeps more than the whole model: heads left out of it lower the logit "
                    "difference in the model.")
else:
    text.append("With no heads in the circuit there is nothing to test for completeness or minimality.")
if VARIANT:
    text.append(f"The circuit assembled from the discovered classes ({len(var)} heads) differs from the authors' "
                f"and keeps {var_faith.ratio:.0%}.")
elif evaluated.variant is not None:
    text.append("The classes discovered in chapters 2-6 assemble exactly this circuit.")
display(Markdown(" ".join(text)))
