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
# # 1. The task: indirect object identification
#
# > *"When Mary and John went to the store, John gave a drink to"* → **" Mary"**
#
# The paper (Wang et al., 2023, Sec. 2) studies how GPT-2 small completes sentences like this
# one. The sentence names two people in an opening clause; the second clause repeats one of
# them, the **subject** (S, here John), who gives something to the other, the **indirect
# object** (IO, here Mary). A model that has learned the task predicts the IO and not the S.
#
# This chapter builds the prompt distribution p<sub>IOI</sub> as the authors' code built it (the
# paper's text describes 15 templates of each order; the code, which produced the published
# numbers, used the first 7 of each, the "mixed" set; `template_set="all"` gives the text's),
# shows what the model sees token by token, and measures the three baseline numbers the
# paper reports: the **logit difference** at the last token (END), averaged over the N prompts,
#
# $$
# \text{logit diff} = \frac{1}{N} \sum_{i=1}^{N} \Big( \text{logit}_{\text{END}}(\text{IO}_i)
#   - \text{logit}_{\text{END}}(\text{S}_i) \Big),
# $$
#
# the **probability of IO**, and **how often IO beats S**.
#
# Every number below is computed by the code beside it, on the model named in the next cell's
# output. The paper's values are for GPT-2 small; when the book is built on a stand-in model
# the two are set side by side, never mixed.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 500  # the paper's baseline used 100,000 prompts; its scripts used 100
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # the authors' code: BABA 1-7 + ABBA 1-7; "all" for all 15 of each

# %% tags=["hide-input"]
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display

from ioi_helpers import dataset, metrics, models, paper, plots, results, tables

PAPER = {key: spec["value"] for key, spec in paper.NUMBERS.items()}  # the paper's numbers (ioi_helpers.paper)

torch.set_grad_enabled(False)
model = models.load_model(model_name)
tokenizer = models.get_tokenizer()
MODEL = model.ioi_model_name
results.start("01_task", MODEL, {"n_prompts": n_prompts, "seed": seed,
                                 "prepend_bos": prepend_bos, "template_set": template_set},
              calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))

# %% [markdown]
# ## The prompt distribution
#
# The templates, names, places and objects are those published with the authors' code. Each
# template exists in two orders: **ABBA** ("*[A] and [B] … [B] gave … to*") and **BABA**
# ("*[B] and [A] … [B] gave … to*"), where [A] is always the IO and [B] the subject. The
# paper's text describes 15 templates of each order; the authors' experiments used the first 7
# of each (the "mixed" set, 14 template groups). The table shows all 30 and marks the set used
# here.

# %% tags=["hide-input"]
mixed = {t.group for t in dataset.templates("mixed")}
used = {t.group for t in dataset.templates(template_set)}
table = pd.DataFrame(dataset.template_table("all"))
table["in 'mixed'"] = table["group"].isin(mixed).map({True: "yes", False: ""})
table["used here"] = table["group"].isin(used).map({True: "yes", False: ""})
table

# %% [markdown]
# Names, places and objects must each be a single GPT-2 token (with its leading space), so
# that every slot occupies one position. The lists are filtered with the model's tokenizer:

# %%
data = dataset.prompt_data()
ioi = dataset.make_ioi_dataset(tokenizer, n_prompts, template_set=template_set,
                               seed=seed, prepend_bos=prepend_bos)
tables.table(pd.DataFrame([
    {"list": k, "published": len(data[k]),
     "single-token (used)": len(data[k]) - len(ioi.dropped[k]),
     "dropped": ", ".join(ioi.dropped[k]) or "none"}
    for k in ("names", "places", "objects")
]))

# %% [markdown]
# A few sampled prompts, with the answer the model should give and the one it should not:

# %%
sampled = pd.DataFrame([{"group": p.group, "prompt": p.text, "IO (correct)": p.io,
                         "S (wrong)": p.s} for p in ioi.prompts[:8]])
tables.table(sampled)

# %% [markdown]
# ### Positions: IO, S1, S1+1, S2, END
#
# The paper's analysis refers to token positions by role. Prompts from different templates
# have different lengths, so every position is stored **per prompt** and all position-based
# code in this book indexes with these per-prompt positions. Here is the first prompt, token
# by token:

# %%
i = 0
roles = {int(ioi.pos[k][i]): k for k in dataset.POSITIONS}
row = ioi.tokens[i, : int(ioi.lengths[i])].tolist()
pd.DataFrame({"position": range(len(row)), "token id": row,
              "token": [repr(tokenizer.decode([t])) for t in row],
              "role": [roles.get(j, "") for j in range(len(row))]}
             ).set_index("position").T

# %% [markdown]
# ## Baseline: does the model do the task?
#
# We run the model on the prompts and read the logits at END. The corrupted distribution
# p<sub>ABC</sub> (same templates, places and objects, but the three name slots filled with three
# unrelated names) is the reference used by every later intervention: with no repeated name,
# the model has no reason to prefer the clean IO over the clean S, so its logit difference there
# should be near zero.

# %%
abc = dataset.make_abc_dataset(tokenizer, ioi)
clean_logits = metrics.end_logits(model, ioi)
abc_logits = metrics.end_logits(model, abc)
clean = metrics.summarize(clean_logits, ioi)
corrupt = metrics.summarize(abc_logits, ioi)

# %% tags=["hide-input"]
settings = ioi.settings() | {"model": MODEL, "template_set": template_set}
results.record("01_task", "baseline.logit_diff", clean["logit diff"], settings)
results.record("01_task", "baseline.io_prob", clean["IO prob"], settings)
results.record("01_task", "baseline.io_above_s", clean["IO > S"], settings)
results.record("01_task", "baseline.abc_logit_diff", corrupt["logit diff"], settings)

rows = [
    ("mean logit diff", clean["logit diff"], corrupt["logit diff"], "baseline.logit_diff"),
    ("mean IO probability", clean["IO prob"], corrupt["IO prob"], "baseline.io_prob"),
    ("IO above S", clean["IO > S"], corrupt["IO > S"], "baseline.io_above_s"),
]
rows = [(m, c, a, PAPER[k], paper.CALIBRATED if k in model.calibrated else "") for m, c, a, k in rows]
baseline = pd.DataFrame(rows, columns=["metric", f"{MODEL}, p_IOI", f"{MODEL}, p_ABC", "paper (GPT-2 small, p_IOI)",
                                       "note"])
display(Markdown(
    f"Settings: model **{MODEL}**, N = {len(ioi)} prompts, templates '{template_set}' "
    f"({len(set(ioi.groups))} groups), BOS {'prepended' if prepend_bos else 'not prepended'}, "
    f"seed {seed}. The paper's numbers: GPT-2 small, 100,000 prompts, no BOS."))
tables.table(baseline)

# %% [markdown]
# The logit difference varies a lot from prompt to prompt. Its distribution over the prompts,
# and its mean per template group, show whether one template or one order carries the average:

# %%
ld = metrics.logit_diff(clean_logits, ioi)
per_prompt = pd.DataFrame({"logit diff": ld.numpy(), "group": ioi.groups,
                           "order": ioi.orders})
hist = plots.histogram(per_prompt, "logit diff", color="order",
                       title=f"Logit difference per prompt ({MODEL}, N={len(ioi)})")
by_group = per_prompt.groupby(["group", "order"], as_index=False)["logit diff"].mean()
bars = plots.bar_chart(by_group, x="group", y="logit diff", color="order",
                       title="Mean logit difference per template group")
plots.show(alt.vconcat(hist, bars))

# %% [markdown]
# ### A known trap: the BOS token
#
# TransformerLens prepends `<|endoftext|>` by default; the authors did not. The choice moves
# the baseline, so every table in this book states it. The same prompts with and without BOS:

# %%
bos_rows = []
for bos in (False, True):
    d = dataset.make_ioi_dataset(tokenizer, n_prompts, template_set=template_set,
                                 seed=seed, prepend_bos=bos)
    s = metrics.summarize(metrics.end_logits(model, d), d)
    bos_rows.append({"BOS": "prepended" if bos else "none (paper)",
                     **{k: s[k] for k in ("logit diff", "IO prob", "IO > S")}})
    results.record("01_task", f"baseline.logit_diff.bos={bos}", s["logit diff"],
                   settings | {"prepend_bos": bos})
tables.table(pd.DataFrame(bos_rows))

# %% [markdown]
# ## Takeaway
#
# The cell below states, from the numbers just computed, how the model compares with GPT-2
# small as the paper reports it.

# %% tags=["hide-input"]
gpt2_ld = paper.NUMBERS["baseline.logit_diff"]["value"]


def cal(key):
    """'; calibrated' after a paper number this model's construction sets (model.calibrated)."""
    return "; calibrated, not reproduced" if key in model.calibrated else ""


verdict = (
    f"On {len(ioi)} prompts, **{MODEL}** puts the IO above the subject on "
    f"**{clean['IO > S']:.1%}** of prompts (paper, GPT-2 small: {PAPER['baseline.io_above_s']:.1%}), with a mean logit "
    f"difference of **{clean['logit diff']:.2f}** (paper: {gpt2_ld}{cal('baseline.logit_diff')}) and a mean IO "
    f"probability of **{clean['IO prob']:.2f}** (paper: {PAPER['baseline.io_prob']}{cal('baseline.io_prob')}). "
    f"On p_ABC the logit difference is {corrupt['logit diff']:.2f}."
)
if model.calibrated & {"baseline.logit_diff", "baseline.io_prob"}:
    verdict += (" A *calibrated* number was set to the paper's by the stand-in's construction (its "
                "unembedding's scale), on prompts of another dataset seed: its closeness to the "
                "paper's shows nothing.")
if not metrics.does_task(metrics.logit_diff(clean_logits, ioi)):
    verdict += (f" This model does **not** do the task ({metrics.task_criterion()} fails), so the "
                f"circuit chapters will find no IOI circuit in it (the expected outcome for random weights).")
display(Markdown(verdict))
