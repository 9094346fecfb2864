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
# # 5. Previous Token heads
#
# An induction head at S2 attends to S1+1, the token *after* the subject's first occurrence.
# It can only find that token if S1+1 carries something about the name just before it. The
# paper (Sec. 3.3) finds the heads that put it there: **Previous Token heads** (2.2 and 4.11 in
# GPT-2 small) attend from S1+1 to S1 and copy the subject's name into S1+1, where the
# Induction heads' keys read it. They are found by path patching to the **Induction heads'
# keys at S1+1**, and confirmed on repeated random tokens, where a previous-token head attends
# to the token just before the query.
#
# This chapter repeats both steps on the model named below.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # the paper: N > 200 for path patching; the authors' scripts used 100
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # the authors' code: BABA 1-7 + ABBA 1-7
previous_threshold = 0.03  # keep a head whose effect is below -3% of the clean logit diff (rule below)
confirm_score = 0.1  # repeated random tokens: the least previous-token score that confirms (its largest, too)
n_rep_seq = 50  # repeated random tokens: sequences ...
rep_seq_len = 20  # ... of this many tokens, each repeated twice
exploratory_k = 4  # receivers of the exploratory fallback (used only if a prerequisite is empty)
# shared by every chapter (discovery.setup_from): the classes' rule thresholds, as fractions
# of the clean logit diff; each class's chapter explains its value
name_mover_threshold = 0.05
s_inhibition_threshold = 0.05
induction_threshold = 0.03
backup_threshold = 0.02

# %% tags=["hide-input"]
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from ioi_helpers import ablation, discovery, models, paper, plots, results, scores, tables, truth

torch.set_grad_enabled(False)
CHAPTER = "05_previous_token"
model = models.load_model(model_name)
MODEL = model.ioi_model_name
setup = discovery.setup_from(model, globals())
settings = setup.settings() | {"threshold": previous_threshold, "corruption": "p_ABC",
                               "receivers": "Induction keys at S1+1"}
results.start(CHAPTER, MODEL, settings, calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))
BOS = "prepended" if prepend_bos else "not prepended"
display(Markdown(f"Settings: N = {n_prompts} p_IOI prompts with matched p_ABC prompts, templates "
                 f"'{template_set}', BOS {BOS}, seed {seed}."))
rep_note = f"{n_rep_seq} sequences of {rep_seq_len} random tokens x 2, BOS {BOS}"

# %% [markdown]
# ## The prerequisite: the Induction heads
#
# Their keys at S1+1 are the receivers. They are found as in chapter 4 (through the
# S-Inhibition heads of chapter 3 and the Name Movers of chapter 2), recomputed here through
# `discovery` (cached on disk).

# %%
classes = discovery.circuit_classes(setup)
for name in ("Name Mover", "S-Inhibition", "Induction"):
    print(classes[name].describe(), end="\n\n")
receivers = discovery.receivers_for(setup, "Induction", k=exploratory_k,
                                    classes=classes)  # the class, or a stand-in

# %% [markdown]
# If the model has no Induction heads, there are no keys to patch into and this chapter
# **cannot discover** Previous Token heads. It then says so, shows the evidence, and runs the
# same experiment on **exploratory** receivers: the heads with the largest drops in chapter 4's
# path patching (itself run on stand-ins if its own prerequisite is missing). Everything
# computed on them is labelled *exploratory*; nothing of it is recorded as a head class.

# %% tags=["hide-input"]
EXPLORATORY = receivers.exploratory
LABEL = "EXPLORATORY: " if EXPLORATORY else ""
RAN = len(receivers.heads) > 0
if not EXPLORATORY:
    display(Markdown(f"Receivers: **{receivers.how}**: "
                     f"{', '.join(paper.head_name(h) for h in receivers.heads)}."))
elif receivers.heads:
    display(Markdown(
        "**No Induction heads were found on this model**, so the Previous Token heads cannot be "
        "discovered here. The evidence (the heads closest to passing each earlier rule) is "
        "below. What follows is an **exploratory** run of the path patching and the "
        f"repeated-token check with stand-in receivers ({receivers.how}): "
        f"{', '.join(paper.head_name(h) for h in receivers.heads)}."))
else:
    display(Markdown(
        "**No Induction heads were found on this model**, so the Previous Token heads cannot be "
        "discovered here, and there is no exploratory stand-in either "
        f"({receivers.how}). This chapter's path patching **cannot run on this model**. The "
        "evidence (the heads closest to passing each earlier rule) is below; the previous-token "
        "scores further down need no prerequisite and are shown in full."))
if EXPLORATORY:
    display(tables.table(discovery.closest_heads(classes, ("Name Mover", "S-Inhibition", "Induction"))))

# %% [markdown]
# ## Path patching to the Induction heads' keys at S1+1
#
# Each sender head takes its p_ABC output, every other head keeps its p_IOI output, and only
# the receivers' **keys at S1+1** are recomputed from that (the paper's Algorithm 1; everything
# after them is recomputed, so the effect reaches the logits through the Induction heads, the
# S-Inhibition heads and the Name Movers). The score is the change in the logit difference as
# a fraction of the clean value.
#
# **Rule** (`discovery.previous_token`): a head is kept if its score is at most
# `-previous_threshold` of the clean logit difference and, on p_IOI, it attends from S1+1 to S1
# more than to any other earlier position (the mean attention S1+1 -> S1 above the mean, over
# prompts, of the largest attention from S1+1 to another position before it). The paper
# (Sec. 3.3) describes these heads as attending to the previous token, S1, and the authors'
# check of the class scores attention to the previous token on repeated random tokens
# (`experiments.py`, "Validation outside of IOI"). Comparing S1+1 -> S1 with S1+1 -> IO alone
# would say nothing on BABA prompts ("Then, [B] and [A] ..."), where the IO comes after S1+1
# and cannot be attended to. The paper names the two heads that stand out without a
# numeric cut-off; 3% is the threshold of chapter 4, for an effect just as far from the logits.

# %%
prev = discovery.previous_token(setup, receivers.heads)
print(("[exploratory receivers; not a discovery]\n" if EXPLORATORY and RAN else "")
      + prev.describe())
if RAN:
    title = (f"{LABEL}Path patching -> Induction keys at S1+1 "
             f"({MODEL}, N={n_prompts})")
    plots.show(plots.head_heatmap(prev.effect, title, "change / clean logit diff",
                                  highlight=prev.heads))

# %% tags=["hide-input"]
if RAN:
    display(Markdown(f"Receivers: {prev.receivers}. Clean logit diff {prev.clean:.3f}, on p_ABC "
                     f"{prev.corrupted:.3f}."))
    display(tables.table(prev.table.drop(columns=["layer", "index"]).sort_values("effect").head(10)))
else:
    display(Markdown("**Not run:** there are no receivers, not even exploratory ones."))

# %% [markdown]
# ## Confirmation on repeated random tokens
#
# On sequences of random tokens repeated twice, the **previous-token score** of a head is its
# mean attention from each token of the second copy to the token just before it
# (`scores.repeated_token_scores`). It needs no prerequisite, so it is shown on every model. A
# kept head is **confirmed** when its previous-token score is the largest of its three scores
# (induction, duplicate, previous) and at least `confirm_score` (attention spread evenly over
# the 20-40 earlier tokens would score about 0.035).

# %%
rep = scores.repeated_token_scores(model, n_seq=n_rep_seq, seq_len=rep_seq_len,
                                   seed=seed, prepend_bos=prepend_bos)
title = f"Previous-token score ({MODEL}; {rep_note})"
plots.show(plots.head_heatmap(rep["previous"], title, "previous-token score",
                              highlight=prev.heads, vmax=1.0))

# %%
check = discovery.repeated_token_check(prev.heads, rep, "previous", confirm_score)
all_heads = [(l, h) for l in range(model.cfg.n_layers)
             for h in range(model.cfg.n_heads)]
behaving = (discovery.repeated_token_check(all_heads, rep, "previous", confirm_score)
            .query("confirmed")["head"].tolist())

# %% tags=["hide-input"]
if len(check):
    display(Markdown(f"**{LABEL}Previous Token heads** on repeated random tokens:"))
    display(tables.table(check))
strongest = torch.argsort(rep["previous"].flatten(), descending=True)[:6]
glue("prev_behaving", f"{len(behaving)} pass the same test ({', '.join(behaving) or 'none'})",
     display=False)
glue("prev_strongest", ", ".join(
    f"{paper.head_name(divmod(int(i), model.cfg.n_heads))} ({float(rep['previous'].flatten()[i]):.2f})"
    for i in strongest), display=False)

# %% [markdown]
# Every head, whatever its path-patching effect: {glue:text}`prev_behaving`. Strongest
# previous-token scores: {glue:text}`prev_strongest`.

# %% [markdown]
# ## Knocking the class out
#
# Mean-ablating the Previous Token heads (their output at every position replaced by its mean
# over p_ABC, per template group) removes the name they copy into S1+1; if the Induction heads
# rely on it, the logit difference should drop.
# (Only for a discovered class: knocking out stand-ins tests nothing.)

# %%
base_ld = knock_ld = None
if prev.heads and not EXPLORATORY:
    values = ablation.ablation_values(model, setup.ioi, setup.abc)
    base_ld = float(ablation.model_logit_diff(model, setup.ioi, values).mean())
    knock_ld = float(ablation.model_logit_diff(model, setup.ioi, values,
                                               removed=prev.heads).mean())

# %% tags=["hide-input"]
if knock_ld is not None:
    glue("prev_knockout",
         f"the model's logit diff is {base_ld:.3f}; with the Previous Token heads "
         f"({', '.join(map(paper.head_name, prev.heads))}) knocked out it is {knock_ld:.3f} "
         f"(change {knock_ld - base_ld:+.3f}; N = {n_prompts}, mean ablation over p_ABC per template group)",
         display=False)
else:
    glue("prev_knockout", "not run: no class was discovered, so there is nothing to knock out",
         display=False)

# %% [markdown]
# Knockout: {glue:text}`prev_knockout`.

# %% [markdown]
# ## Against the planted circuit
#
# On a planted model (`ioi-planted`, `gpt2-planted`) the answer is known: its weights were built
# to put each class in chosen heads ({ref}`appendix-stand-ins`). The Previous Token heads this
# chapter discovered, beside the planted ones (precision: the share of discovered heads that were
# planted; recall: the share of planted heads that were discovered). Any other model has no
# planted circuit, and no table appears.

# %%
discovered = {"Previous Token": [] if EXPLORATORY else prev.heads}
tables.table(truth.against_planted(model, discovered))

# %% [markdown]
# ## Comparison with the paper

# %% tags=["hide-input"]
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))
found = [] if EXPLORATORY else prev.heads
# head by head only where the paper's indices name this model's heads (GPT-2 small, gpt2-planted)
cmp = paper.compare_heads(found, paper.CIRCUIT["Previous Token"]) if models.has_paper_layout(model) else {}
if not cmp:
    display(Markdown(f"The paper's head indices name GPT-2 small's heads; {MODEL}'s head layout is not the "
                     "paper's, so its list is shown for reference and no head-by-head match is made."))
display(pd.DataFrame([{"class": "Previous Token", "found (ours)": ", ".join(map(paper.head_name, found)) or "none",
                       "paper (GPT-2 small)": ", ".join(map(paper.head_name, paper.CIRCUIT["Previous Token"])),
                       **{k: ", ".join(v) or "-" for k, v in cmp.items()}}]).set_index("class"))
display(Markdown(f"Settings: model {MODEL}, N = {n_prompts}, BOS {BOS}, templates '{template_set}', "
                 f"x_new = p_ABC; repeated tokens: {rep_note}. The paper has no number for this step "
                 "beyond its head list."))

results.record(CHAPTER, "classes.Previous Token", [list(h) for h in found], settings,
               note="exploratory receivers: no class discovered" if EXPLORATORY else "")
prefix = "exploratory." if EXPLORATORY else ""
results.record(CHAPTER, f"{prefix}previous_token.previous_score_mean",
               float(check["previous score"].mean()) if len(check) else None,
               settings | {"repeated tokens": rep_note, "confirm_score": confirm_score})
rep_settings = settings | {"repeated tokens": rep_note, "confirm_score": confirm_score}
results.record(CHAPTER, "repeated_tokens.max_previous_score", float(rep["previous"].max()), rep_settings)
results.record(CHAPTER, "repeated_tokens.previous_heads", behaving, rep_settings,
               "every head whose previous-token score is its largest of three and >= confirm_score")
results.record(CHAPTER, f"{prefix}previous_token.confirmed_on_repeated_tokens",
               int(check["confirmed"].sum()) if len(check) else 0, rep_settings)
if knock_ld is not None:
    results.record(CHAPTER, "knockout.none.logit_diff", base_ld, settings)
    results.record(CHAPTER, "knockout.previous_token.logit_diff", knock_ld,
                   settings | {"ablation": "mean over p_ABC per template group"})

# %% [markdown]
# ## Takeaway

# %% tags=["hide-input"]
if EXPLORATORY:
    verdict = (f"**{MODEL}** has no Induction heads by chapter 4's rule, so no Previous Token heads "
               f"can be discovered on it. ")
    verdict += (f"With exploratory receivers ({', '.join(map(paper.head_name, receivers.heads))}) the "
                f"same experiment keeps {len(prev.heads)} head(s), not recorded as a class. " if RAN else
                "No exploratory stand-in exists either, so the path patching could not run. ")
else:
    verdict = (f"On **{MODEL}**, path patching to the Induction heads' keys at S1+1 finds "
               f"**{len(prev.heads)} Previous Token head(s)** "
               f"({', '.join(map(paper.head_name, prev.heads)) or 'none'}; paper: 2.2 and 4.11); "
               f"{int(check['confirmed'].sum())} of them attend to the previous token on repeated "
               f"random tokens. ")
if knock_ld is not None:
    verdict += (f"Knocking them out moves the logit difference from {base_ld:.2f} to {knock_ld:.2f}"
                + (" (a drop, as the paper's account predicts). " if knock_ld < base_ld else
                   " (no drop: the model does not rely on them the way the paper's account predicts). "))
verdict += (f"On repeated random tokens, {len(behaving)} head(s) of the model behave as previous-token "
            f"heads ({', '.join(behaving) or 'none'}); the strongest previous-token score is "
            f"{float(rep['previous'].max()):.2f}.")
display(Markdown(verdict))
