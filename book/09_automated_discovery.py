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
# (ch-automated-discovery)=
# # 9. Automated circuit discovery, scored against a known circuit
#
# Chapters 2-6 found the circuit the way the paper did: one path-patching experiment per
# class, a rule read off each figure, and the next experiment aimed at the heads just found.
# The paper's successors automate that search. **ACDC** (Conmy et al. 2023, *Towards Automated
# Circuit Discovery for Mechanistic Interpretability*) prunes the model's graph edge by edge,
# keeping an edge when patching it changes the output by more than a threshold tau. **Edge
# attribution patching** (EAP; Syed et al. 2023, *Attribution Patching Outperforms Automated
# Circuit Discovery*) replaces those patching runs by one gradient. Both are judged by how well
# they recover a known circuit; on GPT-2 small the only "known" IOI circuit is the paper's hand-found
# one. For context only (not a number of this paper, so not on the scorecard): Conmy et al.
# report that ACDC recovers the paper's IOI heads with a ROC AUC of about 0.87.
#
# A model whose circuit was *built in* gives an exact answer. On `ioi-planted` (weights
# constructed so that each of the paper's seven classes sits in known heads) this chapter
# scores three methods against three references: the **planted** circuit, the classes
# **found by hand** in chapters 2-6 on the same model, and, on GPT-2 small, the **paper's 26
# heads**.
#
# ```{admonition} What you'll see
# Three methods rank every head: (a) attribution patching per head, with TransformerLens' own
# implementation; (b) edge attribution patching between heads (and MLPs); (c) an ACDC-style
# pruning from the logits backwards whose edge test is the paper's path patching. For each
# method and reference: a ROC curve over the method's threshold, its AUC, and precision and
# recall at the default threshold; then which classes each method misses, and why.
# ```

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # p_IOI prompts (and matched p_ABC) for discovery by hand and methods (a), (b)
acdc_n_prompts = 20  # the first prompts of the same set for (c), which patches every edge it tests
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # "mixed": BABA 1-7 + ABBA 1-7 (the authors' code)
# default thresholds of the three methods, fractions of the clean logit difference
attribution_threshold = 0.03
eap_threshold = 0.03
acdc_tau = 0.03
acdc_tau_min = 0.03  # ACDC's walk runs at this tau; its ROC curve covers every tau above it (lower: slower)
# where a head's q/k/v are patched in (c): the positions where the paper's receivers read (END:
# the Name Movers' queries; S2: the S-Inhibition heads' keys and values; S1+1: the Induction
# heads' keys). Add "IO" and "S1" for a wider (slower) walk.
acdc_positions = ["END", "S2", "S1+1"]
# the edge-level section
edge_n_prompts = None  # None: all n_prompts; else its first prompts (fewer: faster, wider CIs)
eap_ig_steps = 5  # EAP-IG's interpolation points (MIB's default)
edge_n_boot = 200  # bootstrap resamples for every interval
control_n_prompts = 16  # prompts for the negative control on gpt2-random (costly)
control_eap_ig = False  # EAP-IG on the control too (5 backward passes at GPT-2's size)
# shared by every chapter (discovery.setup_from): the hand-found classes' rule thresholds
name_mover_threshold = 0.05
s_inhibition_threshold = 0.05
induction_threshold = 0.03
previous_threshold = 0.03
backup_threshold = 0.02

# %% tags=["hide-input"]
import pandas as pd
import torch
from IPython.display import Markdown, display

from ioi_helpers import autodiscovery, discovery, metrics, models, paper, plots, results, tables

torch.set_grad_enabled(False)  # the methods turn gradients on locally where they need them
model = models.load_model(model_name)
MODEL = model.ioi_model_name
CHAPTER = "09_automated_discovery"
results.start(CHAPTER, MODEL, {"n_prompts": n_prompts, "acdc_n_prompts": acdc_n_prompts,
                               "seed": seed, "prepend_bos": prepend_bos,
                               "template_set": template_set},
              calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))

# %% [markdown]
# ## The references
#
# Every head of the model is one example: positive when the reference contains it. The
# hand-found classes are recomputed through `ioi_helpers.discovery` with the rules of
# chapters 2-6 (same model, prompts and thresholds; cached on disk).

# %%
setup = discovery.setup_from(model, globals())
classes = discovery.all_classes(setup)
refs = autodiscovery.references(model, classes)
ioi, abc = setup.ioi, setup.abc

# %% tags=["hide-input"]
ref_rows = [{"reference": ref, "class": name, "heads": " ".join(paper.head_name(h) for h in heads)}
            for ref, cl in refs.items() for name, heads in cl.items()]
display(pd.DataFrame(ref_rows, columns=["reference", "class", "heads"]).style.hide(axis="index"))
notes = []
if "planted" not in refs:
    notes.append(f"{MODEL} has no planted circuit (`model.planted`), so there is no exact ground truth here.")
if "manual" not in refs:
    notes.append("The hand-found classes are all empty on this model, so they give no reference.")
if "paper" not in refs:
    notes.append("The paper's 26 heads are a reference only on GPT-2 small.")
if notes:
    display(Markdown(" ".join(notes)))
if not refs:
    display(Markdown(f"**No reference is available on {MODEL}:** the methods run below, but nothing scores them."))
main_ref = next(iter(refs), None)  # the planted circuit when there is one, else the hand-found classes
main_heads = autodiscovery.union(refs[main_ref]) if main_ref else []
DOES_TASK = metrics.does_task(metrics.logit_diff(metrics.end_logits(model, ioi), ioi))
if not DOES_TASK:
    display(Markdown(
        f"**{MODEL} does not do the task** ({metrics.task_criterion()} fails), so effects as fractions "
        f"of its clean logit difference mean nothing: the ACDC-style walk, whose tau is such a "
        f"fraction, is not run (it would keep every edge), and the gradient methods' scores below "
        f"only show the machinery working."))

# %% [markdown]
# ## (a) Attribution patching per head
#
# Attribution patching (Nanda 2023) estimates activation patching to first order: for a
# head's output $a$, the change of the metric $m$ when $a$ is patched from p_ABC into the p_IOI
# run is about $(a_{\text{ABC}} - a_{\text{IOI}}) \cdot \partial m / \partial a$, all heads
# from one forward and one backward pass. The implementation is TransformerLens'
# `attribution_patch` (node granularity); its "corrupt" run, where the gradient is taken, is
# our p_IOI and its "clean" tokens our p_ABC. A head's score is the absolute estimate summed
# over positions (patching it everywhere), as a fraction of the clean logit difference.
#
# ```{admonition} Where ours differs from TransformerLens' call
# :class: dropdown
# TL takes one metric for every pair; each IOI prompt has its own END, IO and S, so we call TL
# once per prompt (TL itself runs one forward and backward per pair) and average. The bridge's
# weights never require gradients in this book, so a hook makes the token embedding a leaf that
# does, inside `torch.enable_grad()`: gradients reach every activation, no parameter is touched.
# ```

# %%
res_attr = autodiscovery.attribution_heads(model, ioi, abc,
                                          threshold=attribution_threshold)
plots.head_heatmap(res_attr.effect,
                   f"(a) attribution estimate of patching each head ({MODEL})",
                   "change / clean logit diff", highlight=main_heads)

# %% [markdown]
# ## (b) Edge attribution patching
#
# EAP scores an **edge** from a writer (a head's output, or an MLP's) to a reader (a later
# head's query, key or value input, an MLP's input, or the logits) by the writer's change
# between p_IOI and p_ABC dotted with the gradient at the reader's input. A head is in the
# circuit at threshold t when a chain of edges of |score| >= t joins it to the logits; its
# score is the largest such t (`autodiscovery.widest_path_scores`). Heads only, an edge is
# the direct write; with MLPs as nodes, a path through an MLP is two edges.

# %%
res_eap = autodiscovery.edge_attribution(model, ioi, abc, threshold=eap_threshold)
res_eap_mlp = autodiscovery.edge_attribution(model, ioi, abc, mlps=True,
                                             threshold=eap_threshold)
strongest = res_eap_mlp.edges.score.abs().sort_values(ascending=False).index
tables.table(res_eap_mlp.edges.reindex(strongest).head(10), precision=4)

# %% [markdown]
# ## (c) ACDC-style pruning with the paper's path patching
#
# Start at the logits. For the current receiver, path-patch every edge from an earlier head
# (the paper's Algorithm 1: the sender from p_ABC along that path only, MLPs recomputed) and
# **remove the edge when the logit difference changes by less than tau** of its clean value;
# the heads that keep an edge become receivers (their queries, keys and values at each named
# position), latest layer first. Heads only: MLPs sit inside the paths, as in the paper.
#
# ```{admonition} Where this differs from ACDC
# :class: dropdown
# ACDC removes edges *cumulatively*: each test runs in the graph already pruned, with the KL
# divergence as metric. Here every edge is tested against the unpruned model with the paper's
# logit difference, as in the paper's own experiments. So the circuit at any tau is the set of
# edges of |effect| >= tau connected to the logits, and one walk at `acdc_tau_min` gives the
# circuit at every larger tau exactly (tested in `tests/test_autodiscovery.py`): the ROC curve
# below costs one run, where ACDC needs one run per tau.
# ```

# %%
n_acdc = min(acdc_n_prompts, len(ioi))
res_acdc = autodiscovery.acdc(model, ioi[:n_acdc], abc[:n_acdc], tau=acdc_tau,
                              tau_min=acdc_tau_min,
                              positions=acdc_positions) if DOES_TASK else None

# %% tags=["hide-input"]
if res_acdc is not None:
    display(tables.table(autodiscovery.kept_edges(res_acdc.edges, acdc_tau)
                         .sort_values("score").head(12)))

# %% [markdown]
# ## Scores against the references
#
# AUC is the probability that a reference head outranks a head outside the reference (ties
# count one half); 0.5 is chance. Precision and recall are at each method's default threshold.
# For ACDC, heads never reached by the walk at `acdc_tau_min` share the score 0, the last step
# of its curve.

# %%
METHODS = [r for r in (res_attr, res_eap, res_eap_mlp, res_acdc) if r is not None]
table = autodiscovery.score_table(METHODS, refs) if refs else pd.DataFrame()
curves = autodiscovery.roc_frame(METHODS, refs) if refs else pd.DataFrame()
if refs:
    auc = {(r.method, r.reference): r.AUC for r in table.itertuples()}
    display(plots.roc_chart(curves, f"Head recovery on {MODEL}", auc))

# %% tags=["hide-input"]
NAMED = {"attribution": res_attr, "eap_heads": res_eap, "eap_mlps": res_eap_mlp, "acdc": res_acdc}
KEYS = {r.method: key for key, r in NAMED.items() if r is not None}
settings = setup.settings() | {"acdc N": n_acdc, "ablation": "none (patching from p_ABC)"}
for r in METHODS:
    results.record(CHAPTER, f"autodiscovery.{KEYS[r.method]}.seconds", r.seconds, settings)
    results.record(CHAPTER, f"autodiscovery.{KEYS[r.method]}.cpu_seconds", r.cpu_seconds, settings)
    results.record(CHAPTER, f"autodiscovery.{KEYS[r.method]}.head_scores", r.scores.tolist(), settings,
                   note="[layer][head], the score every AUC of this method is computed from")
for ref, ref_classes in refs.items():
    results.record(CHAPTER, f"autodiscovery.reference.{ref}", [list(h) for h in autodiscovery.union(ref_classes)],
                   settings)
for row in table.to_dict("records"):
    for col in ("AUC", "precision", "recall"):
        results.record(CHAPTER, f"autodiscovery.{KEYS[row['method']]}.{row['reference']}.{col.lower()}",
                       row[col], settings | {"threshold": row["threshold"]})
display(Markdown(
    f"Settings: model **{MODEL}**, N = {len(ioi)} p_IOI prompts with their p_ABC twins for (a) and "
    f"(b), {f'the first {n_acdc} for (c)' if res_acdc is not None else '(c) not run'}; templates '{template_set}', BOS "
    f"{'prepended' if prepend_bos else 'not prepended'}, seed {seed}; metric: mean logit "
    f"difference; every patch takes activations from p_ABC (no mean ablation). Seconds: wall "
    f"time of each method on this machine, and the CPU time of the process (all its threads), "
    f"which a busy machine inflates less."))
if len(table):
    display(tables.table(table))

# %% [markdown]
# ## Which classes each method misses, and why
#
# Per class, at each method's default threshold: heads found, and the heads missed with their
# score (a miss just under the threshold reads differently from a score of 0).

# %% tags=["hide-input"]
if main_ref:
    recall = autodiscovery.class_recall(METHODS, refs[main_ref])
    display(Markdown(f"Reference: **{main_ref}**."))
    display(recall.pivot(index="class", columns="method", values="missed").fillna("")
            .replace("", "-").style)
else:
    display(Markdown("No reference, so no class can be missed."))

# %% [markdown]
# Two mechanisms predict misses, and both can be checked here:
#
# * **Nonlinear effects escape gradients.** (a) and (b) are first-order estimates. A head
#   whose effect only appears once its output has moved far (attention that saturates, a
#   LayerNorm that rescales, heads that back each other up) gets a gradient near zero. The
#   first table compares (a)'s estimate with the activation patching it estimates, head by
#   head, for the reference's heads: where they disagree, the head is nonlinear.
# * **Backups can be hidden while the Name Movers work.** The Backup Name Movers act only when
#   the Name Movers are knocked out (Sec. 3.4). Every method here patches one component (or
#   edge) at a time in an otherwise intact model, so it sees what chapter 6 saw *before* the
#   knockout. The second table sets each method's score beside the backups' effect before and
#   after the knockout of the Name Movers (chapter 6's experiment).

# %%
top = autodiscovery.top_heads(res_attr.scores, 8)  # without a reference: (a)'s top 8
lin = autodiscovery.linearity(model, ioi, abc, res_attr, main_heads or top)
patched = lin["activation patching"]
lin["ratio"] = lin["attribution estimate"] / patched.where(patched.abs() > 1e-6)
tables.table(lin)

# %% tags=["hide-input"]
backup_cls = classes["Backup Name Mover"]
backup_heads = (refs.get("planted", {}).get("Backup Name Mover") or backup_cls.heads)
if backup_heads and "before" in backup_cls.extra:
    display(tables.table(pd.DataFrame([{
        "head": paper.head_name(h),
        "direct effect, Name Movers working": float(backup_cls.extra["before"][h]),
        "direct effect, Name Movers knocked out": float(backup_cls.effect[h]),
        **{r.method: float(r.scores[h]) for r in METHODS}} for h in backup_heads])))
else:
    display(Markdown(
        "No Backup Name Movers to check: " + (backup_cls.rule if not backup_heads else
                                              "the Name Movers were not found, so there was no knockout.")))

# %% tags=["remove-input"]
from myst_nb import glue

backup_ref = "planted" if refs.get("planted", {}).get("Backup Name Mover") else "hand-found"
missed_backups = {r.method: [h for h in backup_heads if tuple(h) not in set(r.selected())] for r in METHODS}


def missed_text(r):
    heads = missed_backups[r.method]
    return (f"{r.method} misses " + ", ".join(f"{paper.head_name(h)} (score {float(r.scores[h]):.3f})" for h in heads)
            if heads else f"{r.method} misses none")


if not backup_heads:
    backups = (f"There is no Backup Name Mover on {MODEL} to miss (neither planted nor found by hand), so "
               f"these methods cannot be judged on the backups here.")
elif not METHODS:
    backups = "No method ran, so none can be judged on the backups."
elif all(len(m) == len(backup_heads) for m in missed_backups.values()):
    backups = (f"Every method misses every Backup Name Mover ({backup_ref}: "
               f"{', '.join(map(paper.head_name, backup_heads))}) at its default threshold: on {MODEL} the "
               f"backups are invisible to these methods, which patch one thing at a time in the intact model.")
elif not any(missed_backups.values()):
    backups = (f"No method misses a Backup Name Mover ({backup_ref}: {', '.join(map(paper.head_name, backup_heads))}) "
               f"at its default threshold: on {MODEL} the backups act enough in the intact model for methods "
               f"that patch one thing at a time to find them.")
else:
    backups = (f"At each method's default threshold, of the Backup Name Movers ({backup_ref}: "
               f"{', '.join(map(paper.head_name, backup_heads))}): " + "; ".join(missed_text(r) for r in METHODS)
               + ". A backup is found only where it acts in the intact model, before any knockout.")
glue("backups_missed", backups, display=False)

# %% [markdown]
# ## Edge-level circuits, scored as MIB and ACDC score them
#
# The methods above score heads. ACDC, EAP and the Mechanistic Interpretability Benchmark
# (MIB, Mueller et al. 2025) score the **edges** of one graph. Senders: the input (token and
# position embeddings), each head's output and each MLP's output. Receivers: each head's
# query, key and value inputs, each MLP's input, and the logits. An edge joins every sender
# to every receiver downstream of it (a layer's MLP reads its own layer's heads; q, k and v
# are three edges). `ioi_helpers.edges` builds the graph as MIB's `Graph.from_model` does.

# %% tags=["hide-input"]
import pathlib
import time

from ioi_helpers import edge_eval, edges, faithfulness

t_edges = time.perf_counter()  # the section's wall time, recorded at its end

# %%
graph = edges.graph_of(model)
n_edge = len(ioi) if edge_n_prompts is None else min(edge_n_prompts, len(ioi))
e_ioi, e_abc = ioi[:n_edge], abc[:n_edge]  # the prompts of the whole section
n_edges = edges.count_edges(model.cfg.n_layers, model.cfg.n_heads)
n_edges_gpt2 = edges.count_edges(12, 12)  # GPT-2 small's shape
assert n_edges == graph.n_edges

# %% tags=["hide-input"]
glue("edge_n", f"{n_edges:,}", display=False)
glue("edge_shape", f"{model.cfg.n_layers} layers of {model.cfg.n_heads} heads", display=False)
glue("edge_n_gpt2", f"{n_edges_gpt2:,}", display=False)
glue("edge_prompts", (
    f"all N = {n_edge} p_IOI prompts and their p_ABC twins" if n_edge == len(ioi) else
    f"the first {n_edge} of the N = {len(ioi)} prompts (`edge_n_prompts` = {edge_n_prompts}; "
    f"the default, all of them, gives narrower intervals at {len(ioi) / n_edge:.1f} times "
    f"the cost of scoring and patching)"), display=False)
glue("edge_mib_match", (
    f"the number of edges in MIB's own GPT-2 IOI circuit file" if
    n_edges_gpt2 == edge_eval.MIB_GPT2_SMALL_EDGES else
    f"where MIB's own GPT-2 IOI circuit file has {edge_eval.MIB_GPT2_SMALL_EDGES:,}"),
    display=False)
edge_settings = setup.settings() | {"N": n_edge, "edge_n_prompts": edge_n_prompts,
                                    "ablation": "none (patching from p_ABC)",
                                    "eap_ig_steps": eap_ig_steps, "n_boot": edge_n_boot,
                                    "interval": "bias-corrected percentile bootstrap"}
for name, value in (("n_edges", n_edges), ("n_edges_gpt2_small", n_edges_gpt2)):
    results.record(CHAPTER, f"edges.graph.{name}", value, edge_settings)

# %% [markdown]
# On {glue:text}`edge_shape` the graph has {glue:text}`edge_n` edges; on GPT-2 small's shape
# it has {glue:text}`edge_n_gpt2`, {glue:text}`edge_mib_match` (`circuits/ioi-eap-ig.json`
# of `hannamw/MIB-circuit-track`). This section scores and patches on
# {glue:text}`edge_prompts`.
#
# ### Every method scores every edge
#
# * **EAP**: the sender's change from p_IOI to p_ABC dotted with the gradient of the logit
#   difference at the receiver's input (one forward and one backward pass).
# * **EAP-IG** (Hanna et al. 2024): the same with the gradient averaged over
#   `eap_ig_steps` = {glue:text}`edge_ig_steps` points on the straight line from p_ABC's
#   token embeddings to p_IOI's (MIB's "EAP-IG-inputs"; MIB's circuit track runs 5 steps,
#   the default `--ig-steps` of its `run_attribution.py`).
# * **ACDC-style**: the walk of (c) above already path-patched edges between heads; an edge's
#   score is its largest |effect| over the positions tested. Edges the walk never tested (from
#   the input, to or from MLPs, into heads it never reached) score 0.
# * **Per-head attribution** (a) scores heads, not edges: it enters at node level only.
# * **random**: seeded standard-normal scores, the ranking every method should beat.

# %%
scores, per_prompt, seconds = edge_eval.score_methods(model, e_ioi, e_abc,
                                                      steps=eap_ig_steps, seed=seed)
tables.table(pd.Series(seconds, name="seconds on the machine that built this page")
             .rename_axis("method"), precision=2, index=True)

# %% tags=["hide-input"]
glue("edge_ig_steps", eap_ig_steps, display=False)
if res_acdc is not None:
    scores["ACDC-style"] = edge_eval.acdc_edge_scores(graph, res_acdc.edges)
    seconds["ACDC-style"] = res_acdc.seconds
    acdc_text = (f"The ACDC-style scores come from the walk of (c) on the first {n_acdc} "
                 f"prompts; its curve below is scored on the section's {n_edge}.")
else:
    acdc_text = (f"The ACDC-style walk did not run on {MODEL} (the model does not do the "
                 f"task, see above), so it scores no edge here.")
glue("edge_acdc", acdc_text, display=False)
for name, s in seconds.items():
    results.record(CHAPTER, f"edges.{edge_eval.key(name)}.seconds", s, edge_settings)

# %% [markdown]
# {glue:text}`edge_acdc`
#
# ### Node and edge AUC, CPR and CMD
#
# **Node AUC**: a head's score is the largest |score| of its edges (its q, k and v inputs
# and its output are one node), ranked against a reference's heads. **Edge AUC**: |score|
# over every edge, ranked against a reference's edges. For the planted circuit these are the
# planted edges: the compositions the construction carries signal through, read off the
# weights' construction, not off any method ({ref}`appendix-planted-edges`; on `gpt2-planted`
# they include its decoys' and background copiers' edges). For the hand-found classes and the
# paper's heads they are the edges between the reference's heads, the input and the logits.
#
# **Faithfulness** (MIB's circuit track): keep the top-|score| edges at 0.1, 0.2, 0.5, 1, 2,
# 5, 10, 20, 50 and 100% of all edges, patch every other edge with its p_ABC activation, and
# take faithfulness = (m(C) - m(empty)) / (m(model) - m(empty)), m the mean logit difference.
# The x-axis is the *fraction* of edges kept, linear, from 0.001 to 1; the areas use the
# trapezoid rule between consecutive points, with no point added at 0 (MIB's
# `evaluate_area_under_curve` with `log_scale=False`). **CPR** is the area under
# faithfulness (higher is better; 0.999 for a curve at 1 everywhere); **CMD** the area
# under |1 - faithfulness| (lower is better). Brackets: 95% bootstrap intervals over prompts
# ({glue:text}`edge_n_boot` resamples), bias-corrected: an AUC of scores averaged over a
# resample (fewer distinct prompts, more noise) is mostly *lower* than on all prompts, so the
# plain percentile interval sits below its estimate; the bias-corrected percentile interval
# (Efron's BC, `faithfulness.bias_corrected_interval`) moves the percentiles by that median
# bias. The plain one is the variant `interval="percentile"`. AUC intervals need per-prompt scores
# (EAP, EAP-IG); CPR and CMD intervals keep each circuit and resample the prompts it is
# scored on.
#
# ```{admonition} Where ours differs from MIB
# :class: dropdown
# MIB ranks edges by signed score for CPR and by |score| for CMD; here both rank by
# |score| (one curve per method, 10 patched forwards). MIB also prunes each circuit to edges
# connected to both input and logits; with patching that changes no logit
# (`ioi_helpers.faithfulness`).
# ```

# %%
node_refs, edge_refs, how = edge_eval.edge_references(model, refs)
table, curves = edge_eval.evaluate(model, e_ioi, e_abc, scores, per_prompt, node_refs,
                                   edge_refs, n_boot=edge_n_boot, seed=seed)
table = edge_eval.add_node_method(table, "attribution (heads)", res_attr.scores,
                                  node_refs)
edge_eval.display_table(table)

# %% tags=["hide-input"]
glue("edge_n_boot", edge_n_boot, display=False)
edge_eval.record(CHAPTER, table, edge_settings, "edges")
for ref, mask in edge_refs.items():
    results.record(CHAPTER, f"edges.reference.{ref}", list(
        edges.edge_table(graph, mask.float()).query("score > 0")["name"]),
                   edge_settings | {"how": how[ref]})
best = table.dropna(subset=["CPR"]).sort_values("CPR", ascending=False)
rank_ref = main_ref if main_ref in edge_refs else None
if rank_ref:
    col = f"edge AUC ({rank_ref})"
    top = table.dropna(subset=[col]).sort_values(col, ascending=False).iloc[0]
    rnd = table.set_index("method").loc["random", col]
    edge_text = (f"Against the {edge_eval.CIRCUIT_LABELS.get(rank_ref, rank_ref)} edges "
                 f"({how[rank_ref]}), {top.method} ranks edges best (edge AUC "
                 f"{top[col]:.3f}); the random ranking scores {rnd:.3f}.")
else:
    edge_text = f"{MODEL} has no reference circuit here, so no AUC scores the edges."
interval_cols = [c for c in table.columns if f"{c} lo" in table.columns]
outside = [f"{row['method']}, {c}" for row in table.to_dict("records") for c in interval_cols
           if row[f"{c} lo"] > row[c] or row[f"{c} hi"] < row[c]]
if outside:
    edge_text += (f" {len(outside)} of the intervals {'does' if len(outside) == 1 else 'do'}"
                  f" not contain its own estimate "
                  f"({'; '.join(outside)}): every resample scores it on the same side, and a "
                  f"bootstrap interval cannot reach past its resamples.")
glue("edge_auc_text", edge_text + (
    f" The most faithful ranking is {best.iloc[0].method} (CPR {best.iloc[0].CPR:.3f}, "
    f"CMD {best.iloc[0].CMD:.3f}); random: CPR "
    f"{table.set_index('method').loc['random', 'CPR']:.3f}." if len(best) else ""),
    display=False)

# %% [markdown]
# {glue:text}`edge_auc_text`
#
# ### The negative control: a model with no circuit
#
# The same methods and scores on `gpt2-random` (GPT-2 small's shape, seeded random weights,
# no IOI ability), at `control_n_prompts` prompts (GPT-2 small costs far more per prompt than
# the stand-ins), against the paper's head positions, which name no circuit there. What
# chance looks like: AUCs near 0.5, with intervals that contain it; and no faithfulness to
# speak of: with no circuit, the full model and the empty circuit give about the same logit
# difference, so faithfulness divides noise by a number near zero.

# %%
ctrl = edge_eval.negative_control(model, control_n_prompts, steps=eap_ig_steps,
                                  seed=seed, template_set=template_set,
                                  prepend_bos=prepend_bos, n_boot=edge_n_boot,
                                  ig=control_eap_ig)

# %% tags=["hide-input"]
if ctrl is not None:
    edge_eval.display_table(ctrl.table)
    edge_eval.record(CHAPTER, ctrl.table, edge_settings | {"model": "gpt2-random",
                                                           "N": ctrl.n_prompts}, "edges.control")
    for name, s in ctrl.seconds.items():
        results.record(CHAPTER, f"edges.control.seconds.{edge_eval.key(name)}", s, edge_settings)
    chance = edge_eval.chance_summary(ctrl.table)
    ctrl_text = (
        f"On gpt2-random (N = {ctrl.n_prompts}, {ctrl.seconds['total']:.0f} s on this machine) "
        f"the AUCs run from {chance['min']:.3f} to {chance['max']:.3f}; "
        f"{chance['contain_half']} of their {chance['intervals']} intervals contain 0.5. "
        + ("EAP-IG was not run there (`control_eap_ig`). " if not control_eap_ig else ""))
    if chance["contain_half"] < chance["intervals"]:
        ctrl_text += ("An AUC away from 0.5 here finds no circuit (there is none): it is the "
                      "method's bias on this graph, the level against which an AUC on a "
                      "trained model is to be read. ")
    c_curve, m_curve = ctrl.curves["EAP"], curves["EAP"]
    gap_c = float(c_curve.full.mean() - c_curve.empty.mean())
    gap_m = float(m_curve.full.mean() - m_curve.empty.mean())
    f_all = [f for cv in ctrl.curves.values() for f in cv.faithfulness[:-1]]
    ctrl_text += (f"Its full model and empty circuit differ by {gap_c:.4f} in mean logit "
                  f"difference ({MODEL}: {gap_m:.3f}), and its faithfulness below 100% of "
                  f"the edges runs from {min(f_all):.2f} to {max(f_all):.2f}"
                  + (": noise divided by a number near zero." if abs(gap_c) < 0.1 * abs(gap_m)
                     else "."))
else:
    ctrl_text = (f"{MODEL} is itself the model with no circuit, so the results above are the "
                 f"negative control; no second model runs.")
glue("edge_control_text", ctrl_text, display=False)

# %% [markdown]
# {glue:text}`edge_control_text`
#
# ### Faithfulness curves
#
# One line per method; the diamonds are fixed circuits on the same axes (the planted edges,
# the edges between the hand-found heads, the paper's heads where the model has its layout),
# with the same full-model and empty baselines. The x-axis is drawn on a log scale for
# reading; CPR and CMD integrate on the linear one.

# %%
points = edge_eval.circuit_points(model, e_ioi, e_abc, edge_refs, curves["EAP"])
lines, dots = edge_eval.panel_frames({MODEL: (curves, points)}, control=ctrl)
plots.show(plots.faithfulness_chart(lines, dots, "MIB faithfulness curves"))

# %% tags=["hide-input"]
for row in points.itertuples():
    for col in ("fraction", "faithfulness", "edges"):
        results.record(CHAPTER, f"edges.circuit.{edge_eval.key(row.circuit)}.{col}",
                       float(getattr(row, col)), edge_settings)
glue("edge_points_text", ". ".join(
    f"The {r.circuit} circuit keeps {r.edges:,} edges ({100 * r.fraction:.1f}%) at "
    f"faithfulness {r.faithfulness:.3f}" for r in points.itertuples()) + "."
    if len(points) else "No reference circuit to place on these axes.", display=False)

# %% [markdown]
# {glue:text}`edge_points_text`
#
# ### Stability across prompts
#
# Each method scores the edges twice, on two disjoint random halves of the prompts, and the
# table gives the Jaccard overlap |A and B| / |A or B| of the two top-k edge sets. A half's
# scores are the mean of the method's per-prompt scores above over that half (a prompt's
# scores do not depend on the other prompts, so nothing is run again). The random baseline
# draws two independent rankings: its overlap is chance. The ACDC-style walk is not rerun per
# half (each rerun costs as much as the walk).

# %%
halves = edges.disjoint_halves(n_edge, seed)
# each method's per-prompt scores, averaged over each half
half = edge_eval.half_scores(model, e_ioi, e_abc, halves, seed=seed,
                             per_prompt=per_prompt)
stable = edge_eval.stability(graph, half)
tables.table(stable)

# %% tags=["hide-input"]
for row in stable.to_dict("records"):
    for col, v in row.items():
        if col != "method":
            results.record(CHAPTER, f"edges.stability.{edge_eval.key(row['method'])}."
                           f"{edge_eval.key(col.split(' (')[0])}", v, edge_settings)
mid = stable.columns[2]
s = stable.set_index("method")[mid]
glue("edge_stability_text", (
    f"At the {mid.split(' (')[0]} edges: " + ", ".join(f"{m} {v:.3f}" for m, v in s.items())
    + f" (Jaccard). " + ("Every method agrees with itself across halves more than chance does."
                         if all(s.drop("random") > s["random"]) else
                         "Not every method beats the chance overlap of two random rankings.")),
    display=False)

# %% [markdown]
# {glue:text}`edge_stability_text`
#
# ### The backups' blind spot
#
# On the clean run the Backup Name Movers are quiet: the Name Movers do the work, and the
# backups act once those are knocked out (self-repair, chapter 6). A method that measures
# effects in the intact model can therefore score them low, as the head-level table above
# shows for (a)-(c). One principled fix is chapter 6's: score again with the Name Movers
# knocked out (mean-ablated from p_ABC). The table gives each backup's EAP node score (a
# fraction of the clean logit difference) both ways, against EAP's default threshold
# `eap_threshold`.

# %%
main_classes = refs.get(main_ref, {})  # the planted classes, else the hand-found ones
blind = edge_eval.backup_blind_spot(model, e_ioi, e_abc,
                                    main_classes.get("Name Mover", []),
                                    main_classes, threshold=eap_threshold)
tables.table(blind)

# %% tags=["hide-input"]
rec_clean = edge_eval.recall(blind, "clean run")
rec_ko = edge_eval.recall(blind, "Name Movers knocked out")
results.record(CHAPTER, "edges.backups.recall_clean", rec_clean, edge_settings)
results.record(CHAPTER, "edges.backups.recall_knocked_out", rec_ko, edge_settings)
if len(blind) and main_classes.get("Name Mover"):
    blind_text = (f"With the Name Movers working, EAP finds {rec_clean:.0%} of the "
                  f"{len(blind)} {main_ref} backups at threshold {eap_threshold}; with them "
                  f"knocked out, {rec_ko:.0%}. ")
    if rec_ko > rec_clean:
        blind_text += "The knockout finds backups that the clean run misses."
    elif rec_clean == 1:
        blind_text += ("At edge level EAP's node scores clear the threshold for every backup "
                       "already on the clean run: here there is no blind spot to fix.")
    else:
        blind_text += "The knockout finds no backup that the clean run misses."
elif len(blind):
    blind_text = ("The reference has backups but no Name Movers to knock out, so both columns "
                  "are the clean run.")
else:
    blind_text = (f"The reference ({main_ref or 'none'}) has no Backup Name Mover on {MODEL}, "
                  f"so there is no blind spot to measure.")
glue("edge_blind_text", blind_text, display=False)

# %% [markdown]
# {glue:text}`edge_blind_text`
#
# ### Export in MIB's circuit-file format
#
# Each method's edge scores are written as a MIB circuit file, one per method and model,
# so that a GPT-2 small run can be compared with MIB's published circuits.

# %%
folder = results.results_dir() / "mib_circuits"
files = edge_eval.export_mib(folder, graph, scores, model.cfg.d_model,
                             prefix=edge_eval.key(MODEL))

# %% tags=["hide-input"]
if ctrl is not None:
    files |= {f"{k} (control)": v for k, v in edge_eval.export_mib(
        folder, edges.graph_of(ctrl.model), ctrl.scores, ctrl.model.cfg.d_model,
        "gpt2_random").items()}
for name, path in files.items():
    results.record(CHAPTER, f"edges.mib_file.{edge_eval.key(name)}",
                   str(pathlib.Path(path).relative_to(results.results_dir())), edge_settings,
                   note="relative to the results folder")
glue("edge_files", f"{len(files)} files in `mib_circuits/` of the results folder "
     f"(`$IOI_RESULTS_DIR`)", display=False)
glue("edge_format", faithfulness.MIB_FORMAT, display=False)
edge_seconds = time.perf_counter() - t_edges
results.record(CHAPTER, "edges.section_seconds", edge_seconds, edge_settings,
               note="wall time of the edge-level section, control included")
glue("edge_seconds", f"{edge_seconds:.0f}", display=False)

# %% [markdown]
# Written: {glue:text}`edge_files`. Format: {glue:text}`edge_format`, i.e. `{"cfg", "nodes",
# "edges"}` with edge names such as `a0.h1->a2.h3<q>` and every edge's score
# (`faithfulness.write_mib_json`). This section took {glue:text}`edge_seconds` s on this
# machine.

# %% [markdown]
# ## Takeaways
#
# * With a planted circuit, "did the method find the circuit?" has an exact answer: the ROC
#   curves and AUCs above, for the heads, at every threshold.
# * The gradient methods cost one or a few passes; the path-patching walk costs one run per
#   edge group, and its time grows with every receiver it keeps.
# * {glue:text}`backups_missed`
# * Edge level, as MIB scores it: {glue:text}`edge_auc_text` {glue:text}`edge_blind_text`
# * The reference matters: scored against the hand-found classes, a method is judged on
#   agreeing with chapters 2-6 (whose rules may themselves miss planted heads), and against the
#   paper's heads only on GPT-2 small.
