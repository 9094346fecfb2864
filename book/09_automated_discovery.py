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

from ioi_helpers import autodiscovery, discovery, metrics, models, paper, plots, results

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
res_attr = autodiscovery.attribution_heads(model, ioi, abc, threshold=attribution_threshold)
plots.head_heatmap(res_attr.effect, f"(a) attribution estimate of patching each head ({MODEL})",
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
res_eap_mlp = autodiscovery.edge_attribution(model, ioi, abc, mlps=True, threshold=eap_threshold)
res_eap_mlp.edges.reindex(res_eap_mlp.edges.score.abs().sort_values(ascending=False).index).head(10)

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
                              tau_min=acdc_tau_min, positions=acdc_positions) if DOES_TASK else None

# %% tags=["hide-input"]
if res_acdc is not None:
    display(autodiscovery.kept_edges(res_acdc.edges, acdc_tau).sort_values("score").head(12))

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
    display(table.round(3).style.hide(axis="index"))

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
lin["ratio"] = lin["attribution estimate"] / lin["activation patching"].where(lin["activation patching"].abs() > 1e-6)
lin.round(3)

# %% tags=["hide-input"]
backup_cls = classes["Backup Name Mover"]
backup_heads = (refs.get("planted", {}).get("Backup Name Mover") or backup_cls.heads)
if backup_heads and "before" in backup_cls.extra:
    display(pd.DataFrame([{
        "head": paper.head_name(h),
        "direct effect, Name Movers working": float(backup_cls.extra["before"][h]),
        "direct effect, Name Movers knocked out": float(backup_cls.effect[h]),
        **{r.method: float(r.scores[h]) for r in METHODS}} for h in backup_heads]).round(3).style.hide(axis="index"))
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
# ## Takeaways
#
# * With a planted circuit, "did the method find the circuit?" has an exact answer: the ROC
#   curves and AUCs above, for the heads, at every threshold.
# * The gradient methods cost one or a few passes; the path-patching walk costs one run per
#   edge group, and its time grows with every receiver it keeps.
# * {glue:text}`backups_missed`
# * The reference matters: scored against the hand-found classes, a method is judged on
#   agreeing with chapters 2-6 (whose rules may themselves miss planted heads), and against the
#   paper's heads only on GPT-2 small.
