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
# # 4. Induction and Duplicate Token heads
#
# The S-Inhibition heads (chapter 3) tell the Name Movers at END *which* name not to copy: the
# one that occurs twice. But how do they know which name that is? The paper (Sec. 3.3) traces
# their input back to the second occurrence of the subject, **S2**, and finds two classes of
# heads writing there:
#
# * **Duplicate Token heads** (0.1, 0.10, 3.0) attend from S2 to **S1**, the earlier
#   occurrence of the same token, and write that the token is a duplicate (and where its first
#   copy was);
# * **Induction heads** (5.5, 5.8, 5.9, 6.9) attend from S2 to **S1+1**, the token *after* the
#   earlier copy (found through the Previous Token heads' write at S1+1, chapter 5), and write
#   the same kind of signal.
#
# The paper finds both with path patching to the S-Inhibition heads at S2 (its text: their
# **keys and values**; the authors' code, `experiments.py`: their **values** only),
# separates them by their attention pattern, and confirms each class on sequences of repeated
# random tokens, where an induction head attends to the token after the previous occurrence
# and a duplicate token head to the previous occurrence itself. Appendix A adds how much of the
# S-Inhibition heads' behaviour these heads account for, separating the *position* of the
# first S from its *token*.
#
# This chapter repeats each step on the model named below: the path patching, the attention
# split, the repeated-token check, a knockout, and App. A's share.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # the paper: N > 200 for path patching; the authors' scripts used 100
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # the authors' code: BABA 1-7 + ABBA 1-7
induction_threshold = 0.03  # keep a head whose effect is below -3% of the clean logit diff (rule below)
confirm_score = 0.1  # repeated random tokens: the least score that confirms a class (its largest, too)
n_rep_seq = 50  # repeated random tokens: sequences ...
rep_seq_len = 20  # ... of this many tokens, each repeated twice
exploratory_k = 4  # receivers of the exploratory fallback (used only if a prerequisite is empty)
# shared by every chapter (discovery.setup_from): the classes' rule thresholds, as fractions
# of the clean logit diff; each class's chapter explains its value
name_mover_threshold = 0.05
s_inhibition_threshold = 0.05
previous_threshold = 0.03
backup_threshold = 0.02

# %% tags=["hide-input"]
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from ioi_helpers import ablation, discovery, methods, models, paper, plots, results, scores, tables, truth

torch.set_grad_enabled(False)
CHAPTER = "04_induction_and_duplicate_token"
model = models.load_model(model_name)
MODEL = model.ioi_model_name
setup = discovery.setup_from(model, globals())
settings = setup.settings() | {"threshold": induction_threshold, "corruption": "p_ABC",
                               "receivers": "S-Inhibition keys+values at S2"}
results.start(CHAPTER, MODEL, settings, calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))
BOS = "prepended" if prepend_bos else "not prepended"
display(Markdown(f"Settings: N = {n_prompts} p_IOI prompts with matched p_ABC prompts, templates "
                 f"'{template_set}', BOS {BOS}, seed {seed}."))
rep_note = f"{n_rep_seq} sequences of {rep_seq_len} random tokens x 2, BOS {BOS}"


# %% tags=["hide-input"]
# The chapter's figures: plots' charts with the encodings of each experiment, and the sets
# of heads the knockout removes.
def attention_split_scatter(ind, dup):
    """Each head's attention from S2 to S1 and to S1+1, coloured by the class it was kept in."""
    att = ind.table[["head", "effect", "attn S2->S1", "attn S2->S1+1"]].copy()
    att["class"] = "other"
    att.loc[ind.table["selected"], "class"] = "Induction"
    att.loc[dup.table["selected"], "class"] = "Duplicate Token"
    return plots.scatter_with_diagonal(
        att, "attn S2->S1", "attn S2->S1+1", color="class",
        title=f"{LABEL}Attention from S2 ({MODEL})", tooltip=["head", "effect", "class"])


def repeated_token_heatmaps(rep, ind_heads, dup_heads):
    """Every head's induction and duplicate-token scores, one above the other, the kept heads
    outlined."""
    return alt.vconcat(
        plots.head_heatmap(rep["induction"], f"Induction score ({MODEL})", "induction score",
                           highlight=ind_heads, vmax=1.0),
        plots.head_heatmap(rep["duplicate"], f"Duplicate-token score ({MODEL})", "duplicate score",
                           highlight=dup_heads, vmax=1.0),
    ).properties(title=f"Repeated random tokens: {rep_note}; outlined: {LABEL or ''}heads kept above")


def knockout_sets(ind, dup):
    """(record key, label, heads) for each class that has heads, and both classes together."""
    sets = [(cls.name.lower().replace(" ", "_"), cls.name, cls.heads) for cls in (ind, dup) if cls.heads]
    if ind.heads and dup.heads:
        sets.append(("induction_and_duplicate_token", "both classes", ind.heads + dup.heads))
    return sets


def share_bars(share):
    """The share of the S-Inhibition heads' change that the senders explain, per variant."""
    bars = share.melt(id_vars=["variant", "changes"], value_vars=["share", "share of heads"],
                      var_name="ratio", value_name="fraction")
    return plots.bar_chart(bars.dropna(), x="variant", y="fraction", color="ratio", horizontal=True,
                           title=f"{LABEL}Share of the S-Inhibition change explained by "
                                 f"Induction + Duplicate Token heads ({MODEL})",
                           tooltip=["variant", "changes", "ratio", "fraction"])


# %% [markdown]
# ## The prerequisite: the S-Inhibition heads
#
# Their values (at S2) are the receivers of this chapter's experiment. They are found as in
# chapter 3 (through the Name Movers of chapter 2), recomputed here through `discovery` (the
# results are cached on disk, so this is cheap after chapter 3 ran).

# %%
classes = discovery.circuit_classes(setup)
for name in ("Name Mover", "S-Inhibition"):
    print(classes[name].describe(), end="\n\n")
receivers = discovery.receivers_for(setup, "S-Inhibition", k=exploratory_k,
                                    classes=classes)  # the class, or a stand-in

# %% [markdown]
# If the model has no S-Inhibition heads, the step that finds Induction and Duplicate Token
# heads has nothing to patch into, and this chapter **cannot discover** them. It then says so,
# shows the evidence (the previous steps' tables), and runs the same experiment on an
# **exploratory** set of receivers: the heads with the largest drops in the S-Inhibition step
# (or, if that step could not run either, in a chain of such stand-ins). Everything computed on
# them is labelled *exploratory* and nothing of it is recorded as a head class.

# %% tags=["hide-input"]
EXPLORATORY = receivers.exploratory
LABEL = "EXPLORATORY: " if EXPLORATORY else ""
RAN = len(receivers.heads) > 0
if not EXPLORATORY:
    display(Markdown(f"Receivers: **{receivers.how}**: "
                     f"{', '.join(paper.head_name(h) for h in receivers.heads)}."))
elif receivers.heads:
    display(Markdown(
        "**No S-Inhibition heads were found on this model**, so the Induction and Duplicate "
        "Token heads cannot be discovered here. The evidence (the heads closest to passing each "
        "earlier rule) is below. What follows is an **exploratory** run of the path patching, the "
        f"attention split and the repeated-token check, with stand-in receivers ({receivers.how}): "
        f"{', '.join(paper.head_name(h) for h in receivers.heads)}."))
else:
    display(Markdown(
        "**No S-Inhibition heads were found on this model**, so the Induction and Duplicate "
        "Token heads cannot be discovered here, and there is no exploratory stand-in either "
        f"({receivers.how}). This chapter's path patching **cannot run on this model**. The "
        "evidence (the heads closest to passing each earlier rule) is below; the repeated-token "
        "scores further down need no prerequisite and are shown in full."))
if EXPLORATORY:
    display(tables.table(discovery.closest_heads(classes, ("Name Mover", "S-Inhibition"))))

# %% [markdown]
# ## Path patching to the S-Inhibition heads' values at S2
#
# For each sender head we run the paper's path patching (App. B, Algorithm 1): the sender
# takes its output on the matched p_ABC prompt, every other head keeps its p_IOI output, and
# only the receivers' **values at S2** are recomputed from that, as in the authors' code
# (`experiments.py`, "S-Inhibition patching": `plot_path_patching` with the S-Inhibition
# heads' `hook_v` as receivers at S2). The paper's text says keys and values; that variant is
# run below, side by side. The change in the
# logit difference at END, as a fraction of the clean value, is the sender's score. A head that
# tells the S-Inhibition heads "this token is the duplicated subject" loses that message on
# p_ABC (no name repeats there), so patching it **lowers** the logit difference.
#
# **Rule** (`discovery.induction_and_duplicate`): a head is kept if its score is at most
# `-induction_threshold` of the clean logit difference. The paper's figure for this step (Sec.
# 3.3) shows the seven heads standing out from the rest without stating a cut-off; the threshold (3%) is lower than the 5%
# of chapters 2 and 3 because this effect passes through two more classes of heads (the
# S-Inhibition heads, then the Name Movers) before it reaches the logits. The kept heads are
# then split by their attention from S2 on p_IOI, as the paper describes them: **Induction** if
# they attend more to S1+1 than to S1, **Duplicate Token** otherwise.

# %%
ind, dup = discovery.induction_and_duplicate(setup, receivers.heads,
                                             **methods.default("induction_receivers"))
print(("[exploratory receivers; not a discovery]\n" if EXPLORATORY and RAN else "")
      + ind.describe())
print(dup.describe())
if RAN:
    title = (f"{LABEL}Path patching -> S-Inhibition values at S2 "
             f"({MODEL}, N={n_prompts})")
    plots.show(plots.head_heatmap(ind.effect, title, "change / clean logit diff",
                                  highlight=ind.heads + dup.heads))

# %% tags=["hide-input"]
if RAN:
    display(Markdown(f"Receivers: {ind.receivers}. Clean logit diff {ind.clean:.3f}, on p_ABC "
                     f"{ind.corrupted:.3f}."))
else:
    display(Markdown("**Not run:** there are no receivers, not even exploratory ones."))

# %% [markdown]
# The heads with the largest drops, with the two attention numbers that split them
# (heads outlined above and marked `selected` below passed the rule):

# %% tags=["hide-input"]
if RAN:
    top = ind.table.drop(columns="selected").assign(
        Induction=ind.table["selected"], **{"Duplicate Token": dup.table["selected"]})
    display(tables.table(top.drop(columns=["layer", "index"]).sort_values("effect").head(12)))

# %% [markdown]
# **The paper's text as a variant: keys and values.** The same experiment with the receivers'
# keys *and* values at S2 recomputed (`receiver_input="kv"`). Patching the keys as well adds
# the paths by which a sender changes *where* the S-Inhibition heads attend from END, on top of
# *what* they read there; the heads each version selects and their effects:

# %%
if RAN:  # the paper's text: keys and values
    ind_kv, dup_kv = discovery.induction_and_duplicate(
        setup, receivers.heads, **methods.variant("induction_receivers"))

# %% tags=["hide-input"]
if RAN:
    side = pd.DataFrame([{
        "receivers' inputs patched": label, "Induction": ", ".join(map(paper.head_name, i.heads)) or "none",
        "Duplicate Token": ", ".join(map(paper.head_name, d.heads)) or "none",
        "largest drop": float(i.effect.min()), "heads at or below the cut": len(i.extra["passed the effect cut"])}
        for label, i, d in (("values (authors' code, default)", ind, dup), ("keys and values (paper's text)", ind_kv, dup_kv))])
    display(tables.table(side))
    moved = float((ind_kv.effect - ind.effect).abs().max())
    glue("induction_kv_change",
         f"the largest change of any head's effect is {moved:.3f} (fraction of the clean logit diff), "
         f"and the classes are {'the same' if (ind.heads, dup.heads) == (ind_kv.heads, dup_kv.heads) else 'different'}",
         display=False)
else:
    glue("induction_kv_change", "not run (there are no receivers, not even exploratory ones)",
         display=False)

# %% [markdown]
# Between the two versions: {glue:text}`induction_kv_change`.

# %% [markdown]
# ### Where the heads attend from S2
#
# The paper's split: Induction heads look at S1+1, Duplicate Token heads at S1. Every head is a
# point below (mean attention over the p_IOI prompts); the kept heads are coloured by class.

# %%
if RAN:
    plots.show(attention_split_scatter(ind, dup))

# %% [markdown]
# ## Confirmation on repeated random tokens
#
# The paper checks each class on sequences of random tokens repeated twice, where every token
# of the second copy has exactly one earlier occurrence. For each head and each query in the
# second copy (`scores.repeated_token_scores`, averaged over queries and sequences):
#
# * **induction score**: attention to the token *after* the earlier occurrence;
# * **duplicate-token score**: attention to the earlier occurrence itself;
# * **previous-token score**: attention to the token just before (chapter 5).
#
# These need no prerequisite, so they are shown on every model. A kept head is **confirmed**
# when its class's score is the largest of its three and at least `confirm_score` (the query has
# 20-40 earlier tokens, so attention spread evenly would score about 0.035).

# %%
rep = scores.repeated_token_scores(model, n_seq=n_rep_seq, seq_len=rep_seq_len,
                                   seed=seed, prepend_bos=prepend_bos)
plots.show(repeated_token_heatmaps(rep, ind.heads, dup.heads))

# %%
check_ind = discovery.repeated_token_check(ind.heads, rep, "induction", confirm_score)
check_dup = discovery.repeated_token_check(dup.heads, rep, "duplicate", confirm_score)
all_heads = [(l, h) for l in range(model.cfg.n_layers)
             for h in range(model.cfg.n_heads)]
behaving = {k: discovery.repeated_token_check(all_heads, rep, k, confirm_score)
            .query("confirmed")["head"].tolist() for k in rep}

# %% tags=["hide-input"]
for cls, check in ((ind, check_ind), (dup, check_dup)):
    if len(check):
        display(Markdown(f"**{LABEL}{cls.name} heads** on repeated random tokens:"))
        display(tables.table(check))
display(Markdown("Every head, whatever its path-patching effect: the heads that pass the same "
                 "test for each score, and the strongest scores."))
display(pd.DataFrame([
    {"score": k, "heads that behave so": ", ".join(behaving[k]) or "none",
     "strongest heads (score)": ", ".join(
         f"{paper.head_name(divmod(int(i), model.cfg.n_heads))} ({float(v.flatten()[i]):.2f})"
         for i in torch.argsort(v.flatten(), descending=True)[:5])}
    for k, v in rep.items()]).set_index("score"))

# %% [markdown]
# ## Knocking the classes out
#
# If these heads carry the duplicate signal, mean-ablating them (replacing their output, at
# every position, by its mean over p_ABC per template group, the paper's knockout) should lower
# the logit difference. (Only for discovered classes: knocking out stand-ins tests nothing.)

# %%
knock, base_ld = [], None
if not EXPLORATORY and (ind.heads or dup.heads):
    values = ablation.ablation_values(model, setup.ioi, setup.abc)
    base_ld = float(ablation.model_logit_diff(model, setup.ioi, values).mean())
    for key, what, heads in knockout_sets(ind, dup):
        ld = float(ablation.model_logit_diff(model, setup.ioi, values,
                                             removed=heads).mean())
        label = f"{what} ({', '.join(map(paper.head_name, heads))})"
        knock.append({"key": key, "knocked out": label, "logit diff": ld,
                      "change": ld - base_ld})

# %% tags=["hide-input"]
if base_ld is not None:
    display(Markdown(f"Model logit diff without knockout: **{base_ld:.3f}** (N = {n_prompts}, mean "
                     f"ablation over p_ABC per template group)."))
    display(tables.table(pd.DataFrame(knock).drop(columns="key")))
else:
    display(Markdown("**Not run:** no class was discovered, so there is nothing to knock out."))

# %% [markdown]
# ## How much of the S-Inhibition heads' behaviour do these heads explain? (App. A)
#
# **The paper's experiment.** App. A builds variants of each prompt that change what the
# S-Inhibition heads can read at S2: the **token** signal (the name at S2: the subject as
# usual, a random new name, or the IO's name) and the **position** signal (whether S2's earlier
# occurrence is at S1 as usual, or at the IO's slot). Taking the S-Inhibition heads' outputs
# from a variant moves the logit difference (chapter 3, Fig. 9). The paper reports that
# changing only the outputs of the Induction and Duplicate Token heads (instead of everything
# the variant changes) reproduces most of that change when the position changes and little of
# it when only the token changes: these heads carry the *position* of the duplicate, not its
# identity. The paper gives no number for "most" and "little" here, so none is quoted.
#
# **Ours.** For each variant (built by `dataset.signal_variant` as the authors' code builds
# them, chapter 3: the names are rewritten in place, every token keeps its position, the
# answers stay the clean IO and S) and for p_ABC:
#
# * *total*: the change when the S-Inhibition heads' outputs at END are taken from the variant
#   (App. A's quantity);
# * *via senders*: path patching from the Induction and Duplicate Token heads together (one
#   sender group, taken from the variant) to the S-Inhibition heads' values at S2 (as the
#   discovery step above);
# * *via all heads*: the same with every head upstream of the S-Inhibition heads as one group;
# * **share** = via senders / total (the paper's ratio), and share of heads = via senders /
#   via all heads.
#
# **How this may differ from the authors'.** (1) Our senders reach the S-Inhibition heads only
# through their values at S2 (the path this chapter discovers them by); the paper's
# wording leaves open whether other positions or the queries were included. (2) "Total" also
# counts changes that reach the S-Inhibition heads without passing through any head at S2 (the
# token's own embedding, MLPs, the query at END), so the share is a fraction of everything; the
# share of heads compares with the heads' paths only. (3) The variants are the authors'
# (`experiments.py`), built by rewriting slots of the same template. (4) N, templates
# and the model are those stated above, not the paper's. A ratio is left blank when its
# denominator is under 1% of the clean logit difference (a ratio of two near-zero numbers).

# %%
senders = ind.heads + dup.heads
share = None
if senders and not EXPLORATORY:
    share = discovery.s_inhibition_share(setup, senders, receivers.heads)
    for ratio, denominator in (("share", "total"), ("share of heads", "via all heads")):
        cut = 0.01 * share["clean"].abs()  # not a paper number: a near-zero guard
        near_zero = share[denominator].abs() < cut
        share.loc[near_zero, ratio] = float("nan")
    plots.show(share_bars(share))

# %% tags=["hide-input"]
if share is not None:
    display(Markdown(f"{LABEL}Senders: {', '.join(map(paper.head_name, senders))}; receivers: "
                     f"{', '.join(map(paper.head_name, receivers.heads))}. Clean logit diff "
                     f"{share['clean'][0]:.3f}; N = {n_prompts}; changes in logits."))
    display(tables.table(share.drop(columns="clean")))
else:
    display(Markdown("**Not computed:** the share needs discovered S-Inhibition heads and "
                     "discovered Induction or Duplicate Token heads; "
                     + ("this model has no S-Inhibition heads (a ratio between stand-ins would "
                        "measure nothing)." if EXPLORATORY else
                        "no Induction or Duplicate Token head was found.")))

# %% [markdown]
# ## Against the planted circuit
#
# On a planted model (`ioi-planted`, `gpt2-planted`) the answer is known: its weights were built
# to put each class in chosen heads ({ref}`appendix-stand-ins`). The Induction and Duplicate Token heads this chapter discovered, beside the planted ones
# (precision: the share of discovered heads that were planted; recall: the share of planted heads
# that were discovered). Any other model has no planted circuit, and no table appears.

# %%
discovered = {cls.name: [] if EXPLORATORY else cls.heads for cls in (ind, dup)}
tables.table(truth.against_planted(model, discovered))

# %% [markdown]
# ## Comparison with the paper
#
# The discovered classes beside the paper's lists (head indices are compared literally, which
# only means something on GPT-2 small), and App. A's shares beside ours.

# %% tags=["hide-input"]
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))
rows = []
for cls in (ind, dup):
    found = [] if EXPLORATORY else cls.heads
    cmp = paper.compare_heads(found, paper.CIRCUIT[cls.name])
    rows.append({"class": cls.name, "found (ours)": ", ".join(map(paper.head_name, found)) or "none",
                 "paper": ", ".join(map(paper.head_name, paper.CIRCUIT[cls.name])),
                 **{k: ", ".join(v) or "-" for k, v in cmp.items()}})
    results.record(CHAPTER, f"classes.{cls.name}", [list(h) for h in found], settings,
                   note="exploratory receivers: no class discovered" if EXPLORATORY else "")
display(pd.DataFrame(rows).set_index("class"))


def _share(kind):
    """(min over position-changing variants, max over token-only variants) of the share."""
    if share is None:
        return None
    s = share[share["changes"].isin(kind)]["share"].dropna()
    if not len(s):
        return None
    return float(s.min()) if "position" in kind else float(s.max())


share_pos = _share(("position", "token and position"))
share_tok = _share(("token",))
share_abc = None if share is None else share.loc[share["variant"] == "p_ABC", "share"].iloc[0]
fmt = lambda v: "n/a" if v is None or pd.isna(v) else f"{v:.1%}"  # noqa: E731
display(pd.DataFrame([
    {"quantity": "share, variants that change the position (smallest)", "paper (GPT-2 small)": "large (no number we can source)",
     f"ours ({MODEL})": fmt(share_pos)},
    {"quantity": "share, variants that change only the token (largest)", "paper (GPT-2 small)": "small (no number we can source)",
     f"ours ({MODEL})": fmt(share_tok)},
    {"quantity": "share, p_ABC (token and duplication both gone)", "paper (GPT-2 small)": "not reported",
     f"ours ({MODEL})": fmt(share_abc)},
]).set_index("quantity"))
display(Markdown(f"Settings: model {MODEL}, N = {n_prompts}, BOS {BOS}, templates '{template_set}', "
                 "path patching with x_new = the variant, total = S-Inhibition outputs at END "
                 "patched from the variant. Paper: GPT-2 small, its own N and prompts (App. A)."))

# Record what was computed. Numbers about exploratory stand-ins get keys of their own.
as_number = lambda v: None if v is None or pd.isna(v) else float(v)  # noqa: E731
note = "" if share is not None else "not computed: no discovered classes"
for key, value in (("position_min", share_pos), ("token_max", share_tok), ("p_abc", share_abc)):
    results.record(CHAPTER, f"induction.share_of_s_inhibition_effect.{key}", as_number(value), settings, note)
if share is not None:
    results.record(CHAPTER, "induction.share_of_s_inhibition_effect.by_variant",
                   {r["variant"]: as_number(r["share"]) for _, r in share.iterrows()}, settings)
prefix = "exploratory." if EXPLORATORY else ""
rep_settings = settings | {"repeated tokens": rep_note, "confirm_score": confirm_score}
for check, cls_key, score in ((check_ind, "induction", "induction"), (check_dup, "duplicate_token", "duplicate")):
    results.record(CHAPTER, f"{prefix}{cls_key}.{score}_score_mean",
                   float(check[f"{score} score"].mean()) if len(check) else None, rep_settings)
    results.record(CHAPTER, f"{prefix}{cls_key}.confirmed_on_repeated_tokens",
                   int(check["confirmed"].sum()) if len(check) else 0, rep_settings)
for row in knock:
    results.record(CHAPTER, f"knockout.{row['key']}.logit_diff", row["logit diff"],
                   settings | {"ablation": "mean over p_ABC per template group"})
if base_ld is not None:
    results.record(CHAPTER, "knockout.none.logit_diff", base_ld, settings)
for score in ("induction", "duplicate"):
    results.record(CHAPTER, f"repeated_tokens.max_{score}_score", float(rep[score].max()), rep_settings)
    results.record(CHAPTER, f"repeated_tokens.{score}_heads", behaving[score], rep_settings,
                   "every head whose score is its largest of three and >= confirm_score")

# %% [markdown]
# ## Takeaway

# %% tags=["hide-input"]
if EXPLORATORY:
    verdict = (f"**{MODEL}** has no S-Inhibition heads by chapter 3's rule, so no Induction or "
               f"Duplicate Token heads can be discovered on it. ")
    verdict += (f"With exploratory receivers ({', '.join(map(paper.head_name, receivers.heads))}) the "
                f"same experiment keeps {len(ind.heads)} induction-like and {len(dup.heads)} "
                f"duplicate-like heads, which are not recorded as classes. " if RAN else
                "No exploratory stand-in exists either, so the path patching could not run. ")
else:
    n_conf_i, n_conf_d = int(check_ind["confirmed"].sum()), int(check_dup["confirmed"].sum())
    verdict = (f"On **{MODEL}**, path patching to the S-Inhibition heads' values at S2 "
               f"finds **{len(ind.heads)} Induction** head(s) "
               f"({', '.join(map(paper.head_name, ind.heads)) or 'none'}; paper: 4) and "
               f"**{len(dup.heads)} Duplicate Token** head(s) "
               f"({', '.join(map(paper.head_name, dup.heads)) or 'none'}; paper: 3). On repeated "
               f"random tokens {n_conf_i} of the {len(ind.heads)} Induction heads and {n_conf_d} of the "
               f"{len(dup.heads)} Duplicate Token heads behave as their class. ")
for row in knock:
    verdict += (f"Knocking out {row['knocked out']} moves the logit difference from {base_ld:.2f} to "
                f"{row['logit diff']:.2f} ({'a drop, as the paper predicts' if row['change'] < 0 else 'no drop'}). ")
if share_pos is not None or share_tok is not None:
    # the paper's "most" and "little" (no numbers): read here as more and less than half
    most_pos = share_pos is not None and share_pos > 0.5
    little_tok = share_tok is not None and share_tok < 0.5
    verdict += (f"They explain {fmt(share_pos)} (smallest, position changed) and {fmt(share_tok)} "
                f"(largest, token only) of the S-Inhibition heads' change. Reading the paper's "
                f"\"most\" and \"little\" as more and less than half, "
                + ("this is the paper's division of labour: these heads carry the position of the "
                   "duplicate, not its identity." if most_pos and little_tok else
                   "these heads carry most of the change whether the position or only the token "
                   "changes: on this model they pass on the token as well, unlike the paper's "
                   "account, where they carry the position." if most_pos else
                   "these heads do not carry most of the change when the position changes, unlike "
                   "the paper's account."))
verdict += (f" On repeated random tokens, {len(behaving['induction'])} head(s) of the model behave as "
            f"induction heads ({', '.join(behaving['induction']) or 'none'}) and "
            f"{len(behaving['duplicate'])} as duplicate-token heads "
            f"({', '.join(behaving['duplicate']) or 'none'}); the strongest scores are "
            f"{float(rep['induction'].max()):.2f} and {float(rep['duplicate'].max()):.2f}.")
display(Markdown(verdict))
