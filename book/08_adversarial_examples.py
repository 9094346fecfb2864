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
# # 8. Adversarial examples: what the circuit predicts the model gets wrong
#
# A circuit is an explanation, and an explanation makes predictions. The paper's circuit says
# that the model finds the IO by **detecting which name is repeated** (Duplicate Token and
# Induction heads at S2), **suppressing that name** in the Name Movers' queries (S-Inhibition
# heads), and **copying the other one** (Name Movers). Section 4.4 of the paper turns that
# into a test: if the IO is *also* repeated, the duplicate detection should fire on both
# names, the S-Inhibition heads should inhibit the IO as well, and the model should get worse.
#
# > *"John and Mary went to the store. **Mary had a good day.** John gave a bottle of milk to"*
#
# The paper's text adds one sentence naming the IO ("[A] had a good day.", "[A] was tired.",
# ...) after the first sentence, and, as a control, the same sentences naming the subject S.
# The authors' code that computed the published numbers (`advex.py`, `gen_adv` with
# `DOUBLE_ADX_TEMPLATE`) does a little more: **two** such sentences naming the IO ("Mary had a
# good day. Mary was tired."), inserted after the prompt's last "." (or its last "," when it has
# none), on N = 500 prompts of all 14 "mixed" templates. Its
# Fig. 8 table: on GPT-2 small the logit difference falls from 3.55 to **1.23**, the IO
# probability from 0.49 to **0.36**, and S is preferred to IO on **23.4%** of prompts instead of
# 0.7%; the control barely moves (3.64, 0.59, 0.4%).
#
# This chapter builds both distributions, measures the three numbers, looks at where the
# S-Inhibition heads attend in the adversarial prompts, and adds the paper's other stress test
# of App. J: knocking out the first MLP, which reverses the sign of the logit difference.
# The prompts are built as the authors' code builds them; the paper's one-sentence example is
# measured beside them as a variant.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # prompts per distribution (the paper's scripts used 100)
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # the authors' code: BABA 1-7 + ABBA 1-7 (the adversarial prompts use all 14)
n_adversarial = None  # prompts per adversarial distribution; None: the authors' 500 (advex.py)
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

from ioi_helpers import dataset, discovery, hooks, methods, metrics, models, paper, plots, results, scores, tables
from ioi_helpers.hooks import hook_name

torch.set_grad_enabled(False)
model = models.load_model(model_name)
tokenizer = models.get_tokenizer()
MODEL = model.ioi_model_name
CHAPTER = "08_adversarial_examples"
results.start(CHAPTER, MODEL, {"n_prompts": n_prompts, "seed": seed, "prepend_bos": prepend_bos,
                               "template_set": template_set},
              calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))


# %% tags=["hide-input"]
# The chapter's measurement and figures: one forward pass that keeps the END logits and the
# attention from END, the paper's Fig. 8 rows, the charts' encodings, and the per-group means
# that replace MLP0's output.
n_layers = model.cfg.n_layers
PATTERNS = [hook_name("pattern", l) for l in range(n_layers)]
P = paper.NUMBERS
paper_rows = {  # the paper's Fig. 8 table (GPT-2 small): logit diff, IO prob, S above IO
    "original": (paper.QUOTED["adversarial.original.logit_diff"]["value"], P["baseline.io_prob"]["value"],
                 1 - P["baseline.io_above_s"]["value"]),
    "extra sentence naming IO (adversarial)": (P["adversarial.io.logit_diff"]["value"], P["adversarial.io.io_prob"]["value"],
                                               P["adversarial.io.s_above_io"]["value"]),
    "extra sentence naming S (control)": (P["adversarial.s.logit_diff"]["value"], P["adversarial.s.io_prob"]["value"],
                                          P["adversarial.s.s_above_io"]["value"]),
}


def run_with_patterns(ds, batch_size=100):
    """END logits and the mean attention from END to each named position (per head)."""
    to = [k for k in ("IO", "extra", "S1", "S2") if k in ds.pos]
    logits, att = [], {k: torch.zeros(n_layers, model.cfg.n_heads) for k in to}
    for start in range(0, len(ds), batch_size):
        part = ds[start:start + batch_size]
        end_logits, store = hooks.run(model, part.tokens, part.pos["END"], cache=PATTERNS)
        logits.append(end_logits.float().cpu())
        for k in to:
            for l in range(n_layers):
                att[k][l] += scores.attention_at(store[PATTERNS[l]], part.pos["END"],
                                                 part.pos[k]).sum(0).float().cpu()
    return torch.cat(logits), {k: v / len(ds) for k, v in att.items()}


def summary_table(summary):
    """The three numbers per distribution, each beside the paper's."""
    return pd.DataFrame([
        {"distribution": name, "logit diff": s["logit diff"], "paper: logit diff": paper_rows[name][0],
         "IO prob": s["IO prob"], "paper: IO prob": paper_rows[name][1],
         "S above IO": s["S above IO"], "paper: S above IO": paper_rows[name][2]}
        for name, s in summary.items()])


def distributions_chart(table):
    """Bars per distribution and metric: this model beside the paper's Fig. 8 table."""
    long = table.melt(id_vars="distribution", value_vars=["logit diff", "IO prob", "S above IO"],
                      var_name="metric", value_name="value")
    long["source"] = MODEL
    paper_long = pd.DataFrame([{"distribution": d, "metric": m, "value": v, "source": "paper (GPT-2 small)"}
                               for d, vals in paper_rows.items()
                               for m, v in zip(["logit diff", "IO prob", "S above IO"], vals)])
    both = pd.concat([long, paper_long])
    both["distribution"] = both["distribution"].str.replace(r" \(.*\)", "", regex=True)
    chart = alt.Chart(both).mark_bar().encode(
        x=alt.X("source:N", title=None, axis=alt.Axis(labelAngle=0, labels=False, ticks=False)),
        y=alt.Y("value:Q", title=None),
        color=alt.Color("source:N", title=None),
        column=alt.Column("distribution:N", title=None, sort=list(d.split(" (")[0] for d in DISTS)),
        row=alt.Row("metric:N", title=None),
        tooltip=["distribution", "metric", "source", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=110, height=110, title="The three distributions: ours beside the paper's Fig. 8 table")
    return chart.resolve_scale(y="independent")


def per_prompt_histogram(per_prompt):
    """Overlaid (not stacked) histograms of the logit difference per prompt, per distribution."""
    per_prompt = pd.DataFrame({name.split(" (")[0]: ld.numpy() for name, ld in per_prompt.items()})
    per_prompt["group"] = base.groups
    flat = per_prompt.melt(id_vars="group", var_name="distribution", value_name="logit diff")
    return alt.Chart(flat).mark_bar(opacity=0.55, binSpacing=0).encode(  # overlaid, not stacked
        x=alt.X("logit diff:Q", bin=alt.Bin(maxbins=40), title="logit diff"),
        y=alt.Y("count():Q", stack=None, title="prompts"),
        color=alt.Color("distribution:N", sort=list(per_prompt.columns[:3])),
        tooltip=["distribution:N", alt.Tooltip("count():Q", title="prompts")],
    ).properties(title=f"Logit difference per prompt ({MODEL}, N={len(base)} each)", width=420)


def attention_rows(heads, cls):
    """Each head's mean attention from END to IO, S2, S1 and the extra name, per distribution."""
    rows = []
    for l, h in heads:
        for dist, att, label in (("original", att_0, None), ("naming IO", att_io, "second IO"),
                                 ("naming S", att_s, "middle S")):
            row = {"head": f"{l}.{h}", "class": cls, "distribution": dist,
                   "END->IO": float(att["IO"][l, h]), "END->S2": float(att["S2"][l, h]),
                   "END->S1": float(att["S1"][l, h])}
            row["END->extra name"] = float(att["extra"][l, h]) if "extra" in att else float("nan")
            rows.append(row)
    return rows


def attention_bars(att_table):
    """Bars of the attention from END per head, target and distribution."""
    shown = att_table.melt(id_vars=["head", "class", "distribution"],
                           value_vars=["END->IO", "END->extra name", "END->S1", "END->S2"],
                           var_name="attends to", value_name="attention").dropna()
    shown["panel"] = shown["class"] + " " + shown["head"]  # three panels a row: the column
    return alt.Chart(shown).mark_bar().encode(
        x=alt.X("attends to:N", title=None, sort=["END->IO", "END->extra name", "END->S1", "END->S2"],
                axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("attention:Q", title="mean attention from END"),
        color=alt.Color("distribution:N"),
        xOffset="distribution:N",
        facet=alt.Facet("panel:N", title=None, columns=3, sort=list(dict.fromkeys(shown["panel"]))),
        tooltip=["head", "distribution", "attends to", alt.Tooltip("attention:Q", format=".3f")],
    ).properties(width=140, height=140,
                 title="Attention from END: S-Inhibition heads and Name Movers, on the three distributions")


def group_means(out_abc, ioi, abc):
    """out_abc averaged over the p_ABC prompts of each template group, one row per p_IOI prompt."""
    mean_out = torch.zeros_like(out_abc[: len(ioi)])
    for g in sorted(set(ioi.groups)):
        rows_ioi = [i for i, x in enumerate(ioi.groups) if x == g]
        rows_abc = [i for i, x in enumerate(abc.groups) if x == g]
        mean_out[rows_ioi] = out_abc[rows_abc].mean(0, keepdim=True)  # same template: same length
    return mean_out


# %% [markdown]
# ## The three distributions
#
# **Default, the authors' construction** (`dataset.make_adversarial_dataset`,
# `construction="code"`): each prompt gets an ordered pair of the five published sentences
# (the same one twice is allowed), both naming the IO (adversarial) or S (control), right after
# its last "." (its last "," when it has no "."), on all 14 "mixed" templates and N = 500 as in
# `advex.py`. In templates whose S2 clause follows a comma this gives a run-on sentence ("...
# had a long argument, Mary was tired. Mary had a good day. and afterwards John said to"),
# exactly as the code does. (The authors' final `advex.py` runs the IO case only; the control
# applies the same construction to S.) The same base prompts are used for all three
# distributions, so any difference comes from the extra text alone. The answers stay the
# clean IO and S.
#
# **Variant, the paper's text** (`construction="paper"`): one sentence, after the first
# sentence, right before the clause that holds S2; only templates where a sentence ends there
# ("... went to the store. [B] gave ...", `dataset.adversarial_templates`), N = `n_prompts`.

# %%
ADV = methods.default("adversarial")  # construction "code", N = 500, mixed templates
n_adversarial = ADV["n_prompts"] if n_adversarial is None else n_adversarial
base = dataset.make_ioi_dataset(tokenizer, n_adversarial, template_set=template_set,
                                seed=seed, prepend_bos=prepend_bos)
adv_io, adv_s = (dataset.make_adversarial_dataset(tokenizer, base, who,
                                                  construction=ADV["construction"])
                 for who in ("IO", "S"))
DISTS = {"original": base, "extra sentence naming IO (adversarial)": adv_io,
         "extra sentence naming S (control)": adv_s}

# %% tags=["hide-input"]
adv_templates = dataset.templates(template_set)
display(Markdown(
    f"Templates used: {len(adv_templates)} of the {len(dataset.templates(template_set))} groups of "
    f"'{template_set}' ({', '.join(t.group for t in adv_templates)})."))
tables.table(pd.DataFrame([{"original": base.texts[i], "naming IO": adv_io.texts[i],
                            "naming S": adv_s.texts[i], "IO": base.prompts[i].io,
                            "S": base.prompts[i].s} for i in range(5)]))

# %% [markdown]
# ## Logit difference, IO probability, S above IO
#
# One forward pass per distribution gives both the logits at END and every head's attention
# pattern (used in the next section).

# %%
runs = {name: run_with_patterns(ds) for name, ds in DISTS.items()}
summary = {name: metrics.summarize(logits, DISTS[name])
           for name, (logits, _) in runs.items()}
for name in summary:
    summary[name]["S above IO"] = 1 - summary[name]["IO > S"]
table = summary_table(summary)  # each number beside the paper's
plots.show(distributions_chart(table))

# %% tags=["hide-input"]
settings = base.settings() | {"model": MODEL, "template_set": template_set,
                              "construction": methods.METHODS["adversarial"].construction}
for key, name in (("io", "extra sentence naming IO (adversarial)"), ("s", "extra sentence naming S (control)")):
    results.record(CHAPTER, f"adversarial.{key}.logit_diff", summary[name]["logit diff"], settings)
    results.record(CHAPTER, f"adversarial.{key}.io_prob", summary[name]["IO prob"], settings)
    results.record(CHAPTER, f"adversarial.{key}.s_above_io", summary[name]["S above IO"], settings)
display(Markdown(
    f"Settings: model **{MODEL}**, N = {len(base)} prompts per distribution, templates "
    f"'{template_set}' ({len(adv_templates)} groups), the authors' construction (two sentences), BOS "
    f"{'prepended' if prepend_bos else 'not prepended'}, seed {seed}, no ablation. The paper: "
    f"GPT-2 small, its Fig. 8 table (no BOS)."))
tables.table(table)

# %% [markdown]
# **The paper's one-sentence example, as a variant.** The same three numbers with one sentence
# before the S2 clause, on the templates with a sentence break (`n_prompts` prompts). The
# difference from the table above is the construction only: one sentence instead of two, its
# place, and the template subset.

# %%
VAR = methods.variant("adversarial")  # the paper's text: one sentence, before S2
var_templates = dataset.adversarial_templates(template_set)
var_base = dataset.make_ioi_dataset(tokenizer, n_prompts, template_set=var_templates,
                                    seed=seed, prepend_bos=prepend_bos)
var_dists = {"original": var_base} | {
    f"one sentence naming {who}":
        dataset.make_adversarial_dataset(tokenizer, var_base, who, **VAR)
    for who in ("IO", "S")}
var_summary = {name: metrics.summarize(metrics.end_logits(model, ds), ds)
               for name, ds in var_dists.items()}

# %% tags=["hide-input"]
var_rows = []
for name, ds in var_dists.items():
    sm = var_summary[name]
    var_rows.append({"distribution (paper's text)": name, "logit diff": sm["logit diff"], "IO prob": sm["IO prob"],
                     "S above IO": 1 - sm["IO > S"], "N": len(ds)})
    if name != "original":
        results.record(CHAPTER, f"adversarial.paper_text.{'io' if 'IO' in name else 's'}.logit_diff", sm["logit diff"],
                       settings | {"construction": "variant: the paper's one sentence", "N": len(ds)})
    glue(f"adv_var_{name.split()[-1].lower()}", sm["logit diff"], display=False)
display(Markdown(f"Example ({MODEL}): *{dataset.make_adversarial_dataset(tokenizer, var_base[:1], 'IO', **methods.variant('adversarial')).texts[0]}*"))
tables.table(pd.DataFrame(var_rows))

# %% [markdown]
# With one sentence the logit difference goes from {glue:text}`adv_var_original:.2f` to
# {glue:text}`adv_var_io:.2f` when the sentence names the IO and to
# {glue:text}`adv_var_s:.2f` when it names S.
#
# The logit difference per prompt, original vs adversarial, shows whether the drop is a shift
# of every prompt or a subset of prompts flipping:

# %%
per_prompt = {name: metrics.logit_diff(logits, DISTS[name])
              for name, (logits, _) in runs.items()}
plots.show(per_prompt_histogram(per_prompt))

# %% [markdown]
# ## Why it fails: the S-Inhibition heads attend to the second IO
#
# The paper's explanation (Sec. 4.4): in the adversarial prompts the IO is a duplicated token
# too, so the S-Inhibition heads, which normally attend from END to S2 and tell the Name Movers
# which name to avoid, spread their attention onto the **second occurrence of the IO** (the
# name in the extra sentence). The Name Movers then avoid the IO as well.
# This chapter measures the attention half of that account only: it runs no intervention on
# these heads, so it can show where they attend, not that their attention causes the drop.
#
# The S-Inhibition heads are the ones derived in chapter 3, recomputed here through
# `ioi_helpers.discovery` (path patching on p_IOI with the same model, N, seed and BOS setting;
# cached on disk).

# %%
setup = discovery.setup_from(model, globals())
classes = discovery.circuit_classes(setup)
sinh, nm = classes["S-Inhibition"], classes["Name Mover"]
print(nm.describe())
print(sinh.describe())

# %%
att_0, att_io, att_s = (runs[name][1] for name in DISTS)  # in DISTS' order
if sinh.heads:
    att_table = pd.DataFrame(attention_rows(sinh.heads, "S-Inhibition")
                             + attention_rows(nm.heads, "Name Mover"))
    plots.show(attention_bars(att_table))

# %% tags=["hide-input"]
if sinh.heads:
    display(tables.table(att_table, na="n/a: the original prompt has no extra name"))
else:
    display(Markdown(
        f"**No S-Inhibition heads were found on {MODEL}** (chapter 3's rule: {sinh.rule}; chapter 3 "
        f"shows the effect of every head). The mechanism the paper describes cannot be checked head by "
        f"head here; the heatmap below shows instead how much **every** head attends from END to the "
        f"second IO in the adversarial prompts, so any head that does is visible."))
    plots.show(plots.head_heatmap(att_io["extra"], f"Attention END -> second IO, every head ({MODEL})",
                                  "attention"))

# %% [markdown]
# The same attention for every head, adversarial minus original: where attention moved *to*
# when the IO was repeated (END → second IO) and how END → S2 changed. The S-Inhibition
# heads are outlined.

# %%
plots.show(alt.concat(
    plots.head_heatmap(att_io["extra"], "END -> second IO (adversarial)", "attention",
                       highlight=sinh.heads),
    plots.head_heatmap(att_io["S2"] - att_0["S2"], "END -> S2: adversarial - original",
                       "change", highlight=sinh.heads),
    plots.head_heatmap(att_io["IO"] - att_0["IO"], "END -> IO: adversarial - original",
                       "change", highlight=nm.heads),
    columns=2))

# %%
if sinh.heads:  # the S-Inhibition heads' mean attention from END
    sel = tuple(zip(*sinh.heads))
    to_io2 = float(att_io["extra"][sel].mean())  # to the second IO (adversarial)
    to_s2_adv, to_s2_0 = float(att_io["S2"][sel].mean()), float(att_0["S2"][sel].mean())
    to_s_extra = float(att_s["extra"][sel].mean())  # to the extra S (control)

# %% tags=["hide-input"]
if sinh.heads:
    results.record(CHAPTER, "adversarial.s_inhibition_attention_to_second_io", to_io2, settings)
    results.record(CHAPTER, "adversarial.s_inhibition_attention_to_s2", to_s2_adv, settings)
    mech = (f"The S-Inhibition heads ({', '.join(f'{l}.{h}' for l, h in sinh.heads)}) put on average "
            f"**{to_io2:.2f}** of their END attention on the second IO in the adversarial prompts "
            f"(and {to_s_extra:.2f} on the extra S in the control); their attention to S2 goes from "
            f"{to_s2_0:.2f} (original) to {to_s2_adv:.2f}. ")
    if to_io2 > 0.1:
        mech += ("That matches the attention half of the paper's explanation: the repeated IO draws the "
                 "S-Inhibition heads' attention. Whether that causes the drop in the logit difference "
                 "would take an intervention on these heads (e.g. patching their outputs), which this "
                 "chapter does not run.")
    else:
        mech += ("They barely attend to it: the attention half of the paper's explanation does not hold for "
                 "these heads on this model. What causes the change instead is not tested here (this "
                 "chapter measures attention only, with no intervention).")
else:
    n_heads = model.cfg.n_heads
    top = [divmod(i, n_heads) for i in torch.topk(att_io["extra"].flatten(), 3).indices.tolist()]
    mech = (f"No S-Inhibition heads were found on {MODEL}, so the paper's mechanism cannot be tested as "
            f"stated. The heads that attend most from END to the second IO in the adversarial prompts are "
            + ", ".join(f"{l}.{h} ({float(att_io['extra'][l, h]):.2f})" for l, h in top)
            + "; in the original prompts the same heads attend from END to S2 with "
            + ", ".join(f"{float(att_0['S2'][l, h]):.2f}" for l, h in top) + ".")
    if min(float(att_0["S2"][h]) for h in top) > 0.3:
        mech += (" In their attention they follow whichever name is repeated: the repeated IO gets the "
                 "attention that goes to the repeated subject in the original prompts, in heads the "
                 "paper's rules do not classify. This is attention only: no intervention here tests "
                 "whether these heads cause the change in the logit difference.")
display(Markdown(mech))

# %% [markdown]
# ## MLP0 knockout (App. J)
#
# The paper's App. J reports that the first MLP matters to the whole circuit: knocking it out
# *reverses* the sign of the logit difference (the model then prefers S). The knockout here is
# the paper's, applied to an MLP: MLP0's output at every position is replaced
# by its mean over p_ABC, per template group and position (the same averaging as the heads'
# knockouts in chapters 6-7).

# %%
ioi, abc = setup.ioi, setup.abc
MLP0 = hook_name("mlp_out", 0)
_, store = hooks.run(model, abc.tokens, abc.pos["END"], cache=[MLP0])
mean_out = group_means(store[MLP0], ioi, abc)  # p_ABC mean per group and position
seq = ioi.tokens.shape[1]
knock_mlp0 = (MLP0, lambda x, hook: mean_out[:, :seq].to(x.dtype))
knocked, _ = hooks.run(model, ioi.tokens, ioi.pos["END"], fwd_hooks=[knock_mlp0])
clean_logits, _ = hooks.run(model, ioi.tokens, ioi.pos["END"])
mlp0 = {"clean": metrics.summarize(clean_logits, ioi),
        "MLP0 knocked out": metrics.summarize(knocked, ioi)}

# %% tags=["hide-input"]
mlp0_settings = ioi.settings() | {"model": MODEL, "ablation": "mean over p_ABC per template group and position",
                                  "template_set": setup.template_set}
results.record(CHAPTER, "mlp0.knockout_logit_diff", mlp0["MLP0 knocked out"]["logit diff"], mlp0_settings)
results.record(CHAPTER, "mlp0.clean_logit_diff", mlp0["clean"]["logit diff"], mlp0_settings)
display(Markdown(
    f"Settings: model **{MODEL}**, N = {len(ioi)} p_IOI prompts (templates '{setup.template_set}'), "
    f"BOS {'prepended' if prepend_bos else 'not prepended'}, mean ablation of MLP0 over the "
    f"matched p_ABC prompts. Paper: GPT-2 small, the sign of the logit difference reverses."))
tables.table(pd.DataFrame(mlp0).T[["logit diff", "IO prob", "IO > S"]].rename_axis("run"), index=True)

# %% tags=["remove-input"]
o, a, c = (summary[n] for n in DISTS)
PO = paper.QUOTED["adversarial.original.logit_diff"]["value"]  # the paper's numbers (ioi_helpers.paper)
PA, PS = ({k: paper.NUMBERS[f"adversarial.{who}.{k}"]["value"] for k in ("logit_diff", "s_above_io")}
          for who in ("io", "s"))
BARELY = 0.10  # a control whose logit diff moves by less than this fraction "barely moves"


def change(before, after):
    """'x% lower' or 'x% higher': the relative change from before to after."""
    rel = after / before - 1 if before else float("nan")
    return f"{abs(rel):.0%} {'lower' if rel < 0 else 'higher'}" + (", past zero" if before > 0 > after else "")


control_rel = c["logit diff"] / o["logit diff"] - 1 if o["logit diff"] else float("nan")
control_barely = abs(control_rel) < BARELY
does_task = metrics.does_task(metrics.logit_diff(runs["original"][0], base))
glue("adv_io", f"On {MODEL} (N = {len(base)} per distribution), adding the sentences that name the IO "
     f"moves the logit difference from {o['logit diff']:.2f} to {a['logit diff']:.2f} "
     f"({change(o['logit diff'], a['logit diff'])}; paper, GPT-2 small: {PO:.2f} to {PA['logit_diff']:.2f}, "
     f"{change(PO, PA['logit_diff'])}) and makes S win on {a['S above IO']:.1%} of prompts "
     f"(paper: {PA['s_above_io']:.1%}).", display=False)
if control_barely:
    control = (f"The control sentences naming S barely move it: {o['logit diff']:.2f} to {c['logit diff']:.2f} "
               f"({change(o['logit diff'], c['logit diff'])}), S winning on {c['S above IO']:.1%}, as in the "
               f"paper ({PO:.2f} to {PS['logit_diff']:.2f}, S winning on {PS['s_above_io']:.1%}).")
else:
    control = (f"The control sentences naming S move it too: {o['logit diff']:.2f} to {c['logit diff']:.2f} "
               f"({change(o['logit diff'], c['logit diff'])}), S winning on {c['S above IO']:.1%}. That differs "
               f"from the paper's control, which barely moves ({PO:.2f} to {PS['logit_diff']:.2f}, S winning on "
               f"{PS['s_above_io']:.1%}).")
glue("adv_control", control, display=False)
io_worse = a["logit diff"] < c["logit diff"] - 0.5 and a["logit diff"] < o["logit diff"] - 0.5
if not does_task:
    verdict = (f"{MODEL} does not do the task on the original prompts (IO above S on {o['IO > S']:.0%}), "
               f"so these comparisons say nothing about an IOI circuit.")
elif io_worse and control_rel > -BARELY:
    verdict = "As the circuit predicts, repeating the IO hurts and repeating S does not."
elif io_worse:
    verdict = (f"Repeating the IO hurts more than repeating S ({a['logit diff']:.2f} against "
               f"{c['logit diff']:.2f}), as the circuit predicts; but repeating S hurts as well, "
               f"which the paper's control on GPT-2 small does not show.")
else:
    verdict = ("Unlike GPT-2 small, this model is not clearly hurt by the repeated IO more than by the "
               "repeated S: the prediction the paper derives from its circuit does not hold here.")
glue("adv_verdict", verdict, display=False)
k = mlp0["MLP0 knocked out"]["logit diff"]
glue("adv_mlp0", f"Knocking out MLP0 takes the logit difference from {mlp0['clean']['logit diff']:.2f} to "
     f"{k:.2f}: the sign " + ("reverses, as the paper reports for GPT-2 small." if k < 0 < mlp0["clean"]["logit diff"]
                              else "does not reverse (the paper reports that it does for GPT-2 small)."),
     display=False)

# %% [markdown]
# ## Takeaway
#
# **The adversarial prompts.** {glue:text}`adv_io`
#
# **The control.** {glue:text}`adv_control`
#
# **The circuit's prediction.** {glue:text}`adv_verdict`
#
# **MLP0.** {glue:text}`adv_mlp0`
