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
# # 3. S-Inhibition Heads
#
# The Name Movers (chapter 2) copy the name they attend to, and they attend to the IO rather
# than to the subject. Why? The paper's next step (Sec. 3.2) looks at what shapes their
# **queries** at END:
#
# > Path patching to the Name Movers' queries finds four heads, **7.3, 7.9, 8.6 and 8.10**,
# > the *S-Inhibition Heads*. They attend from END to **S2** (0.51 on average) and their output
# > steers the Name Movers' attention *away* from the subject: replacing it (by its value on
# > prompts without a repeated name) moves the Name Movers' attention from the IO towards S1
# > (Fig. 4c).
#
# Appendix A asks what the S-Inhibition heads' output actually says: the subject's **token**
# ("don't copy John") or its **position** ("don't copy the name in the first/second slot")?
# Patching their output from prompts where one or both signals are changed shows that the
# position matters most (Fig. 9). This chapter repeats the three experiments on the model
# named below.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # path patching and patching runs (paper: N > 200; the authors' scripts used 100)
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # the authors' code: BABA 1-7 + ABBA 1-7
name_mover_threshold = 0.05  # chapter 2's rule for the Name Movers (Fig. 3b)
s_inhibition_threshold = 0.05  # a head needs a drop of 5% of the clean logit diff (rule below)
exploratory_k = 4  # stand-in receivers if a prerequisite class is empty (never recorded as a class)
# shared by every chapter (discovery.setup_from): the classes' rule thresholds, as fractions
# of the clean logit diff; each class's chapter explains its value
induction_threshold = 0.03
previous_threshold = 0.03
backup_threshold = 0.02

# %% tags=["hide-input"]
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from ioi_helpers import ablation, discovery, methods, models, paper, plots, results, signals, tables, truth

PAPER = {key: spec["value"] for key, spec in paper.NUMBERS.items()}  # the paper's numbers (ioi_helpers.paper)

torch.set_grad_enabled(False)
CHAPTER = "03_s_inhibition"
model = models.load_model(model_name)
MODEL = model.ioi_model_name
setup = discovery.setup_from(model, globals())
settings = setup.settings() | {"threshold": s_inhibition_threshold, "corruption": "p_ABC",
                               "receivers": "Name Mover queries at END"}
results.start(CHAPTER, MODEL, settings, calibrated=model.calibrated)
BOS = "prepended" if prepend_bos else "not prepended"
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))
display(Markdown(f"Settings: N = {n_prompts} p_IOI prompts with matched p_ABC prompts, templates "
                 f"'{template_set}', BOS {BOS}, seed {seed}."))


# %% tags=["hide-input"]
# The chapter's figures: plots.bar_chart with the encodings of each experiment.
def attention_bars(att, heads):
    """Attention from END to IO, S1 and S2 of each patched head."""
    att_df = pd.DataFrame([{"head": paper.head_name(h), "to": k, "attention": float(att[k][h])}
                           for h in heads for k in ("IO", "S1", "S2")])
    return plots.bar_chart(att_df, x="head", y="attention", color="to",
                           title=f"{P_LABEL}Attention from END ({MODEL}, N={n_prompts})").encode(
        xOffset=alt.XOffset("to:N"))


def name_mover_attention_bars(shift):
    """Each Name Mover's attention from END, clean and with the patched heads from p_ABC."""
    long = shift.melt(id_vars=["head", "run", "logit diff"], var_name="to", value_name="attention")
    long["to"] = long["to"].str.removeprefix("attn END->")
    runs = ["clean", "S-Inh outputs from p_ABC"]
    long["run"] = long["run"].map(dict(zip(["clean", "patched"], runs)))
    return plots.bar_chart(long, x="to", y="attention", color="run",
                           title=f"{P_LABEL}Name Mover attention from END ({MODEL}, N={n_prompts})",
                           tooltip=["head", "run", "to", "attention"]).encode(
        color=alt.Color("run:N", sort=runs, title="run"), xOffset=alt.XOffset("run:N", sort=runs),
        column=alt.Column("head:N", title="Name Mover"))


def token_position_bars(tp):
    """The logit difference for each variant, ours beside the paper's (Fig. 9)."""
    bars = pd.concat([tp.drop(columns="logit diff").assign(source=MODEL, **{"logit diff": tp["logit diff"]}),
                      tp.drop(columns="logit diff").assign(source="paper (GPT-2 small)",
                                                           **{"logit diff": tp["paper (GPT-2 small)"]})])
    bars["token / position"] = bars["token"] + " / " + bars["position"]
    return plots.bar_chart(bars, x="token / position", y="logit diff", color="source", horizontal=True,
                           title=f"{P_LABEL}S-Inhibition outputs at END from each variant",
                           tooltip=["token / position", "source", "logit diff"]).encode(
        yOffset=alt.YOffset("source:N"))


# %% [markdown]
# ## The prerequisite: the Name Movers
#
# Their queries are the receivers of this chapter's experiment. They are found by chapter 2's
# rule, recomputed here through `discovery` (cached on disk, so this is cheap after chapter 2).

# %%
nm, nnm = discovery.name_movers(setup)
print(nm.describe())
classes = {"Name Mover": nm}
movers = discovery.receivers_for(setup, "Name Mover", k=exploratory_k,
                                 classes=classes)  # the Name Movers, or a stand-in

# %% [markdown]
# If the model has no Name Movers there are no queries to patch into, and this chapter **cannot
# discover** S-Inhibition heads. It then says so and shows the evidence. If the model does the
# task at all, it runs the same experiments on an **exploratory** stand-in for the Name Movers
# (the heads with the largest drops in chapter 2's experiment); everything computed on them is
# labelled *exploratory* and nothing of it is recorded as a class or as one of the paper's
# numbers.

# %% tags=["hide-input"]
TASK = setup.does_task  # metrics.does_task, as in every chapter
EXPLORATORY = movers.exploratory
LABEL = "EXPLORATORY: " if EXPLORATORY else ""
RUN = bool(movers.heads) and TASK
if not EXPLORATORY:
    display(Markdown(f"Receivers: **{movers.how}**: {', '.join(map(paper.head_name, movers.heads))}."))
elif not TASK:
    display(Markdown(
        f"**No Name Movers on {MODEL}, and the model does not do the task** (clean logit diff "
        f"{nm.clean:.3f} <= 0), so there is nothing to trace: the S-Inhibition step and the "
        "experiments built on it are **not run** on this model. The evidence (chapter 2's "
        "experiment, the heads closest to its rule):"))
    display(tables.table(discovery.closest_heads(classes, ("Name Mover",))))
else:
    display(Markdown(
        f"**No Name Movers on {MODEL}**, so S-Inhibition heads cannot be discovered here. The "
        "evidence (the heads closest to chapter 2's rule) is below. What follows is an "
        f"**exploratory** run with stand-in receivers: {movers.how}: "
        f"{', '.join(map(paper.head_name, movers.heads)) or 'none'}."))
    display(tables.table(discovery.closest_heads(classes, ("Name Mover",))))

# %% [markdown]
# ## Path patching to the Name Movers' queries at END
#
# For each sender head: the sender takes its output on the matched p_ABC prompt, every other
# head keeps its p_IOI output, MLPs are recomputed, and only the Name Movers' **queries at END**
# see the result (all Name Movers together as receivers); the logit difference is then read
# with everything after the Name Movers recomputed. A head that tells the Name Movers which
# name *not* to attend to loses that message on p_ABC (no name is repeated), so patching it
# **lowers** the logit difference.
#
# **Rule** (`discovery.s_inhibition`): effect ≤ −`s_inhibition_threshold` × the
# clean logit difference (5%, the scale at which the four heads stand out in the paper's
# Fig. 4, as for the Name Movers in Fig. 3b), and attention END→S2 larger than END→IO (the text:
# they attend to S2). The receivers themselves are not candidates, and the rule is applied only
# when the clean logit difference is positive.

# %%
sin = discovery.s_inhibition(setup, movers.heads if RUN else [])
if RUN:
    print(("[exploratory receivers; not a discovery]\n" if EXPLORATORY else "")
          + sin.describe())
    title = (f"{LABEL}Path patching -> Name Mover queries at END "
             f"({MODEL}, N={n_prompts})")
    plots.show(plots.head_heatmap(
        100 * sin.effect, title,
        "change in logit diff (% of clean)", highlight=sin.heads))

# %% tags=["hide-input"]
if RUN:
    display(Markdown(f"Receivers: {sin.receivers}. Clean logit diff {sin.clean:.3f}, on p_ABC "
                     f"{sin.corrupted:.3f}."))
    if not (sin.effect != 0).any():
        last = max(l for l, _ in movers.heads)
        display(Markdown(
            f"**Every effect is exactly 0.** A head can reach the receivers' queries only from an "
            f"earlier layer, and the receivers sit in layer{'s' if len({l for l, _ in movers.heads}) > 1 else ''} "
            f"{', '.join(sorted({str(l) for l, _ in movers.heads}))}: no head comes before layer {last} "
            f"that could change their queries here{' (the Name Movers are in the first layer)' if last == 0 else ''}."))
    top = sin.table.drop(columns=["layer", "index"]).sort_values("effect", kind="stable").head(8)
    display(Markdown("The heads with the largest drops and the attention the rule looks at:"))
    display(tables.table(top))
else:
    display(Markdown(f"**Not run:** {sin.rule.removeprefix('not run: ')}."))
classes["S-Inhibition"] = sin
s_heads = [] if EXPLORATORY else sin.heads  # the class, as recorded

# %% [markdown]
# The heads the next experiments patch: the S-Inhibition heads, or, if none were found on a
# model that does the task, an exploratory stand-in (the heads with the largest drops above).

# %% tags=["hide-input"]
if RUN:
    if sin.heads:
        patched = sin.heads
        how = ("the heads found above with exploratory receivers" if EXPLORATORY
               else "the discovered S-Inhibition heads")
    else:
        patched = discovery.top_heads(sin.effect, exploratory_k, exclude=movers.heads)
        how = (f"exploratory: the {exploratory_k} heads with the largest drops in path patching to the "
               "Name Movers' queries, whatever their attention")
        display(Markdown(f"**No S-Inhibition heads on {MODEL}** by the rule above (evidence: the "
                         "heatmap and the table)."))
        to_s2 = discovery.attention(setup, "END", "S2")
        looks = [(l, h) for l, h in torch.nonzero(to_s2 > 0.5).tolist()]
        if looks:  # context only: heads that look like S-Inhibition heads but do not pass the rule
            direct = discovery.direct_effects(setup).relative
            display(Markdown(
                "For context, the heads that attend from END mostly to S2 (> 0.5), as the paper's "
                "S-Inhibition heads do: " + "; ".join(
                    f"{l}.{h} (attention {float(to_s2[l, h]):.2f}, direct effect on the logits "
                    f"{float(direct[l, h]):+.0%}, effect through the Name Movers' queries "
                    f"{float(sin.effect[l, h]):+.0%})" for l, h in looks)
                + ". The rule asks for the effect through the Name Movers' queries, listed last."))
    P_EXPL = EXPLORATORY or not sin.heads
    display(Markdown(f"Patched below: **{how}**: "
                     f"{', '.join(map(paper.head_name, patched)) or 'none (no head lowers the logit diff there)'}."))
else:
    patched, how, P_EXPL = [], "nothing", True
    display(Markdown("**Not run:** there are no heads to patch on this model (see above)."))
PATCH = bool(patched)
P_LABEL = "EXPLORATORY: " if P_EXPL else ""

# %% tags=["hide-input"]
if RUN and sin.heads and not EXPLORATORY:  # does the selection hold on a second sample of prompts?
    sin2 = discovery.s_inhibition(discovery.setup_from(model, globals() | {"seed": seed + 1}),
                                  movers.heads)
    same = sin2.heads == sin.heads
    display(Markdown(f"On a second, independent sample of prompts (seed {seed + 1}, same N and receivers) the "
                     f"rule selects {', '.join(map(paper.head_name, sin2.heads)) or 'no head'}: "
                     + ("the same heads." if same else "**not the same heads**: the selection sits at the "
                        "edge of the rule on this model.")))
    results.record(CHAPTER, f"robustness.S-Inhibition.seed_{seed + 1}", [list(h) for h in sin2.heads],
                   settings | {"seed": seed + 1})

# %% [markdown]
# ## Where they look: attention from END
#
# The paper: the S-Inhibition heads attend from END to S2, 0.51 on average over the four heads.

# %%
att = {k: discovery.attention(setup, "END", k) for k in ("IO", "S1", "S2")}
if PATCH:
    plots.show(attention_bars(att, patched))

# %% tags=["remove-input"]
att_s2 = float(torch.stack([att["S2"][h] for h in s_heads]).mean()) if s_heads else None
results.record(CHAPTER, "s_inhibition.attention_to_s2", att_s2, settings,
               note="" if s_heads else "no S-Inhibition heads on this model")
glue("s_inh_att_s2", f"{att_s2:.2f}" if s_heads else "n/a (no S-Inhibition heads)", display=False)
glue("s_inh_att_s2_paper", PAPER["s_inhibition.attention_to_s2"], display=False)

# %% [markdown]
# The S-Inhibition heads' mean attention END→S2: **{glue:text}`s_inh_att_s2`** (paper, GPT-2
# small: {glue:text}`s_inh_att_s2_paper`).

# %% [markdown]
# ## What they do to the Name Movers' attention (Fig. 4c)
#
# We run the p_IOI prompts with the S-Inhibition heads' outputs **at END** replaced by their
# values on the matched p_ABC prompts (same sentence, three different names: no repeated name,
# so no "this is the subject" signal), everything after recomputed
# (`signals.attention_shift`). If the heads steer the Name Movers away from S, the Name Movers
# should now attend less to the IO and more to S1.

# %%
if PATCH:
    shift = signals.attention_shift(model, setup.ioi, setup.abc, patched, movers.heads)
    plots.show(name_mover_attention_bars(shift))
else:
    shift = None

# %% tags=["hide-input"]
if PATCH:
    wide = shift.pivot(index="head", columns="run", values=["attn END->IO", "attn END->S1"])
    display(tables.table(wide, index=True))
    mean = shift.groupby("run")[["attn END->IO", "attn END->S1", "attn END->S2", "logit diff"]].mean()
    d_io = float(mean.loc["patched", "attn END->IO"] - mean.loc["clean", "attn END->IO"])
    d_s1 = float(mean.loc["patched", "attn END->S1"] - mean.loc["clean", "attn END->S1"])
    glue("s_inh_shift",
         f"attention to IO {mean.loc['clean', 'attn END->IO']:.3f} → "
         f"{mean.loc['patched', 'attn END->IO']:.3f}, to S1 {mean.loc['clean', 'attn END->S1']:.3f} → "
         f"{mean.loc['patched', 'attn END->S1']:.3f}; logit diff {mean.loc['clean', 'logit diff']:.3f} → "
         f"{mean.loc['patched', 'logit diff']:.3f}", display=False)
    prefix = "exploratory." if P_EXPL else ""
    results.record(CHAPTER, f"{prefix}s_inhibition.name_mover_attention_io_change", d_io, settings)
    results.record(CHAPTER, f"{prefix}s_inhibition.name_mover_attention_s1_change", d_s1, settings)
else:
    d_io, d_s1 = None, None
    display(Markdown("**Not run:** there are no S-Inhibition heads (or stand-ins) to patch on this model."))
    glue("s_inh_shift", "not run (no S-Inhibition heads or stand-ins to patch)", display=False)

# %% [markdown]
# Averaged over the Name Movers (clean → patched): {glue:text}`s_inh_shift`.

# %% [markdown]
# ### Knocking them out
#
# Mean-ablating the S-Inhibition heads' output at END (their p_ABC mean per template group, the
# paper's knockout) removes the signal altogether; the logit difference should fall.

# %%
if s_heads:
    values = ablation.ablation_values(model, setup.ioi, setup.abc)
    base_ld = float(ablation.model_logit_diff(model, setup.ioi, values).mean())
    mask = ablation.knockout_mask(model, setup.ioi, {h: ["END"] for h in s_heads})
    ko_ld = float(ablation.ablated_logit_diff(model, setup.ioi, mask, values).mean())

# %% tags=["hide-input"]
if s_heads:
    results.record(CHAPTER, "knockout.s_inhibition.at_end.logit_diff", ko_ld,
                   settings | {"ablation": "mean over p_ABC per template group"})
    display(Markdown(f"Logit difference {base_ld:.3f} → **{ko_ld:.3f}** with the S-Inhibition heads "
                     f"({', '.join(map(paper.head_name, s_heads))}) knocked out at END (N = {n_prompts})."))
else:
    base_ld = ko_ld = None
    display(Markdown("Nothing to knock out: no S-Inhibition heads were discovered on this model."))

# %% [markdown]
# ## Token or position? (App. A, Fig. 9)
#
# The S-Inhibition heads could tell the Name Movers *which token* the subject is, or *where*
# its first occurrence sits. App. A separates the two by patching the heads' outputs at END
# from prompts in which one or both signals are changed, and reading the logit difference of
# the original prompt (IO minus S):
#
# * **token** signal, the name at S2 (and its earlier occurrence): the subject as usual
#   (*orig*), a new random name (*random*), or the IO's name (*inverted*: the heads now point at
#   the IO's token);
# * **position** signal, where that earlier occurrence sits: at S1 as usual (*orig*), or in the
#   IO's slot (*inverted*: the first clause's order is flipped, ABBA ↔ BABA).
#
# If only the token mattered, the *inverted token* rows would flip the sign; if only the
# position mattered, the *inverted position* column would. The paper (GPT-2 small) finds the
# position decisive (its column goes negative) and the token a smaller push in the same
# direction.
#
# **Our construction: the authors' code** (`dataset.signal_variant`, used by
# `signals.token_position`; see the Methods appendix). The paper's appendix describes the
# variants in words; the authors' `experiments.py` ("Token and position signal results") builds
# them with `gen_flipped_prompts`, and we rewrite the three name slots (IO, S1, S2) of the same
# prompt exactly as that code does, with A = the IO's name, B = the subject's, C and D new
# names: orig/orig A B B, orig/inverted B A B, inverted/orig B A A, inverted/inverted A B A,
# **random/orig D C C and random/inverted C D C: the random variants replace the IO's name as
# well**, so the patched outputs carry no name of the original prompt. Every token keeps its
# position, so each variant pairs with the prompt token by token. We patch the heads' outputs
# at END only, all heads together, from the variant's own run; the baseline *orig/orig* is our
# clean logit difference (the paper's 3.55 is GPT-2 small's), and N, templates and model are
# those stated above.
#
# **Variant** (`construction="keep-io"`): the random variants keep the IO's name (A C C,
# C A C). It is not the paper's text (which does not list
# the slots); it is shown beside the code's so the effect of replacing the IO is visible. Only
# the two *random* cells differ.

# %%
if PATCH:
    tp = signals.token_position(model, setup.ioi, patched,
                                **methods.default("token_position"))  # authors' code
    tp_keep_io = signals.token_position(model, setup.ioi, patched,
                                        **methods.variant("token_position"))  # keep-io
    tp["IO kept (variant)"] = tp_keep_io["logit diff"].values
    tp["paper (GPT-2 small)"] = [paper.NUMBERS[f"token_position.{t}_{p}"]["value"]
                                 for t, p in zip(tp["token"], tp["position"])]
    plots.show(token_position_bars(tp))
else:
    tp = None

# %% tags=["hide-input"]
if PATCH:
    display(Markdown(f"{P_LABEL}Patched heads: {', '.join(map(paper.head_name, patched))}; "
                     f"N = {n_prompts}. One example prompt per variant (the same original prompt):"))
    with pd.option_context("display.max_colwidth", None):
        display(tables.table(tp[["token", "position", "slots (IO, S1, S2)", "example"]]))
    order = (list(signals.TOKENS), list(signals.POSITION_SIGNALS))
    grid = tp.pivot(index="token", columns="position", values="logit diff").loc[order[0], order[1]]
    paper_grid = tp.pivot(index="token", columns="position", values="paper (GPT-2 small)").loc[order[0], order[1]]
    display(Markdown(f"**Logit difference, {MODEL}** (rows: token signal; columns: position signal):"))
    display(grid.round(2))
    display(Markdown("**Paper, GPT-2 small** (Fig. 9):"))
    display(paper_grid)
    display(Markdown(f"**The two constructions side by side** ({MODEL}): the authors' code replaces the IO "
                     "in the random variants (D C C, C D C); the variant keeps it (A C C, C A C). The other "
                     "four variants are the same in both."))
    display(tables.table(tp[["token", "position", "logit diff", "IO kept (variant)", "paper (GPT-2 small)"]]
            .rename(columns={"logit diff": "authors' code (default)"}).set_index(["token", "position"]), index=True))
else:
    display(Markdown("**Not run:** there are no S-Inhibition heads (or stand-ins) to patch on this model."))

# %% tags=["hide-input"]
official = tp is not None and not P_EXPL
for token in signals.TOKENS:
    for position in signals.POSITION_SIGNALS:
        key = f"token_position.{token}_{position}"
        value = (float(tp.loc[(tp["token"] == token) & (tp["position"] == position), "logit diff"].iloc[0])
                 if tp is not None else None)
        results.record(CHAPTER, key, value if official else None,
                       settings | {"patched at": "END", "construction": methods.METHODS["token_position"].construction},
                       note="" if official else ("exploratory stand-ins, not the S-Inhibition class: see "
                                                  f"exploratory.{key}" if tp is not None else
                                                  "no S-Inhibition heads on this model"))
        if tp is not None and not official:
            results.record(CHAPTER, f"exploratory.{key}", value, settings | {"patched": how})

# %% [markdown]
# ## Against the planted circuit
#
# On a planted model (`ioi-planted`, `gpt2-planted`) the answer is known: its weights were built
# to put each class in chosen heads ({ref}`appendix-stand-ins`). The S-Inhibition heads this
# chapter discovered, beside the planted ones (precision: the share of discovered heads that were
# planted; recall: the share of planted heads that were discovered). Any other model has no
# planted circuit, and no table appears.

# %%
tables.table(truth.against_planted(model, {"S-Inhibition": s_heads}))

# %% [markdown]
# ## Comparison with the paper

# %% tags=["hide-input"]
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))
# head by head only where the paper's indices name this model's heads (GPT-2 small, gpt2-planted)
cmp = paper.compare_heads(s_heads, paper.CIRCUIT["S-Inhibition"]) if models.has_paper_layout(model) else {}
if not cmp:
    display(Markdown(f"The paper's head indices name GPT-2 small's heads; {MODEL}'s head layout is not the "
                     "paper's, so its list is shown for reference and no head-by-head match is made."))
display(pd.DataFrame([{"class": "S-Inhibition", "found (ours)": ", ".join(map(paper.head_name, s_heads)) or "none",
                       "paper": ", ".join(map(paper.head_name, paper.CIRCUIT["S-Inhibition"])),
                       **{k: ", ".join(v) or "-" for k, v in cmp.items()}}]).set_index("class"))
if s_heads:
    class_note = ""
elif not RUN:
    class_note = ("not run: the model does not do the task" if not TASK else "not run: no Name Movers")
else:
    class_note = "exploratory receivers: no class discovered" if EXPLORATORY else "none found by the rule"
results.record(CHAPTER, "classes.S-Inhibition", [list(h) for h in s_heads], settings, note=class_note)
rows = [{"claim": paper.NUMBERS["s_inhibition.attention_to_s2"]["claim"], "paper (GPT-2 small)": PAPER["s_inhibition.attention_to_s2"],
         f"ours ({MODEL})": "n/a" if att_s2 is None else round(att_s2, 3)}]
for token in signals.TOKENS:
    for position in signals.POSITION_SIGNALS:
        key = f"token_position.{token}_{position}"
        ours = results.load(CHAPTER)["values"][key]["value"]
        rows.append({"claim": paper.NUMBERS[key]["claim"], "paper (GPT-2 small)": paper.NUMBERS[key]["value"],
                     f"ours ({MODEL})": "n/a" if ours is None else round(ours, 3)})
display(pd.DataFrame(rows).set_index("claim"))
display(Markdown(f"Ours: model {MODEL}, N = {n_prompts}, BOS {BOS}, templates '{template_set}', seed {seed}; "
                 "path patching with x_new = p_ABC; token/position: the heads' outputs at END patched from "
                 "each variant; knockout: mean ablation over p_ABC. Paper: GPT-2 small, no BOS (App. A, Fig. 9)."))

# %% [markdown]
# ## Takeaway

# %% tags=["hide-input"]
def _names(heads):
    return ", ".join(map(paper.head_name, heads)) or "none"


if not RUN:
    verdict = (f"**{MODEL}** has no Name Movers and does not do the task (clean logit diff "
               f"{nm.clean:.3f}), so there are no S-Inhibition heads to find: none are recorded, and "
               "the token-vs-position experiment is not defined here.")
else:
    verdict = ((f"With exploratory receivers ({_names(movers.heads)}; **{MODEL}** has no Name Movers) "
                if EXPLORATORY else
                f"On **{MODEL}**, path patching to the Name Movers' ({_names(movers.heads)}) queries ")
               + f"finds **{len(sin.heads)} S-Inhibition head(s)** ({_names(sin.heads)}; paper: {_names(paper.CIRCUIT['S-Inhibition'])})"
               + (", not recorded as a class. " if EXPLORATORY else ". "))
    if att_s2 is not None:
        verdict += (f"They attend from END to S2 with {att_s2:.2f} on average (paper: "
                    f"{PAPER['s_inhibition.attention_to_s2']}). ")
    if ko_ld is not None:
        verdict += (f"Knocking them out at END moves the logit difference from {base_ld:.2f} to {ko_ld:.2f}"
                    + (". " if ko_ld < base_ld else ", not the drop their role predicts. "))
    if shift is not None:
        moved = d_io < 0 and d_s1 > 0
        verdict += (f"Taking {'their' if not P_EXPL else 'the stand-ins’'} outputs from p_ABC changes the "
                    f"Name Movers' attention to the IO by {d_io:+.3f} and to S1 by {d_s1:+.3f}: "
                    + ("attention moves from the IO towards S1, as in the paper's Fig. 4c. " if moved else
                       "not the shift from IO towards S1 of the paper's Fig. 4c. "))
    if tp is not None:
        g = grid
        pos_flip = g.loc["orig", "inverted"] < 0
        tok_flip = g.loc["inverted", "orig"] < 0
        verdict += (f"Token vs position: inverting the position gives {g.loc['orig', 'inverted']:.2f} "
                    f"(paper {PAPER['token_position.orig_inverted']}), inverting the token "
                    f"{g.loc['inverted', 'orig']:.2f} (paper {PAPER['token_position.inverted_orig']}), both "
                    f"{g.loc['inverted', 'inverted']:.2f} (paper {PAPER['token_position.inverted_inverted']}), "
                    f"from {g.loc['orig', 'orig']:.2f}: "
                    + ("the position signal decides, as in GPT-2 small." if pos_flip and not tok_flip else
                       "the token signal decides, unlike GPT-2 small." if tok_flip and not pos_flip else
                       "both signals flip the answer." if tok_flip and pos_flip else
                       "neither signal alone flips the answer."))
display(Markdown(verdict))
