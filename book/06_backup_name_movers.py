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
# # 6. Backup Name Movers: the circuit repairs itself
#
# Chapter 2 found the **Name Movers**: the heads that copy the IO's name into the logits. If
# they did the job alone, knocking them out should wreck the task. Section 3.4 of the paper
# reports that it does not: with the three Name Movers of GPT-2 small mean-ablated, the logit
# difference **drops by only 5%**. Other heads take over. To find them the paper repeats the
# path patching to the logits, this time in the model with the Name Movers knocked out, and
# calls **Backup Name Movers** the heads outside the other classes whose effect then exceeds
# **2%** of the logit difference: eight heads in GPT-2 small (9.0, 9.7, 10.1, 10.2, 10.6,
# 10.10, 11.2, 11.9). We also show how the knockout changes the **Negative Name Movers'**
# effect; our reference copy of the paper gives no number for that, so it is measured here
# without a paper value beside it.
#
# This chapter does the same three things on the model named below: the knockout, the repeated
# path patching with the class derived from it by the paper's rule, and the before/after
# comparison, side by side.

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # pairs (p_IOI, p_ABC) for path patching and knockouts (the paper's scripts: 100)
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"  # "mixed": BABA 1-7 + ABBA 1-7 (the authors' code); "all" for all 15 of each
backup_threshold = 0.02  # Sec. 3.4: effect above 2% of the logit diff after the knockout
compensation_margin = 0.05  # this book's choice: the Name Movers' cost must grow by this fraction of the logit diff
# shared by every chapter (discovery.setup_from): the classes' rule thresholds, as fractions
# of the clean logit diff; each class's chapter explains its value
name_mover_threshold = 0.05
s_inhibition_threshold = 0.05
induction_threshold = 0.03
previous_threshold = 0.03

# %% tags=["hide-input"]
import altair as alt
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from ioi_helpers import ablation, discovery, methods, models, paper, plots, results, tables, truth

torch.set_grad_enabled(False)
model = models.load_model(model_name)
MODEL = model.ioi_model_name
CHAPTER = "06_backup_name_movers"
results.start(CHAPTER, MODEL, {"n_prompts": n_prompts, "seed": seed, "prepend_bos": prepend_bos,
                               "backup_threshold": backup_threshold},
              calibrated=model.calibrated)
display(Markdown(f"**Model:** {models.describe_model(model)}"))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))

# %% [markdown]
# ## The classes found so far
#
# Chapters 2-5 derived the other classes with the paper's path-patching steps. They are
# recomputed here through `ioi_helpers.discovery` (same model, N, seed and BOS setting;
# cached on disk), with the rule each one used.

# %%
setup = discovery.setup_from(model, globals())
classes = discovery.circuit_classes(setup)
for c in classes.values():
    print(c.describe(), end="\n\n")
nm, nnm = classes["Name Mover"], classes["Negative Name Mover"]
ioi, abc = setup.ioi, setup.abc

# %% tags=["hide-input"]
# The knockouts and tables of this chapter: where the Name Movers are knocked out, the
# logit difference with a set of heads knocked out, and the tables of effects before/after.
KO_AT = methods.default("name_mover_knockout")["knockout_at"]  # "END": the authors' code
settings = setup.settings() | {"ablation": f"mean over p_ABC per template group and position, at {KO_AT}",
                               "construction": methods.METHODS["name_mover_knockout"].construction}
others = [h for c in classes.values() for h in c.heads]  # the heads of the other classes


def knockout_spec(heads, at=KO_AT):
    """Heads -> the positions where they are mean-ablated (None: every position)."""
    return {h: None if at is None else [at] for h in heads}


def ablated(spec):
    """Per-prompt logit diff with the heads of ``spec`` mean-ablated (``values``)."""
    return ablation.ablated_logit_diff(model, ioi, ablation.knockout_mask(model, ioi, spec), values)


def knocked(heads):
    """Mean logit diff with ``heads`` knocked out at KO_AT."""
    return ablated(knockout_spec(heads)).mean().item()


def change_table(before, after, selected):
    """Every head's effect before and after the knockout, largest change first."""
    change = pd.DataFrame([
        {"head": paper.head_name((l, h)), "before": float(before[l, h]), "after": float(after[l, h]),
         "change": float(after[l, h] - before[l, h]),
         "class": next((c.name for c in classes.values() if (l, h) in c.heads), ""),
         "Backup (selected)": (l, h) in selected}
        for l in range(before.shape[0]) for h in range(before.shape[1])])
    return change.reindex(change["change"].abs().sort_values(ascending=False).index)


def sign_table(heads, before, after):
    """Each head's effect before and after the knockout, and whether its sign changed."""
    return pd.DataFrame([{"head": paper.head_name(h), "before": float(before[h]), "after": float(after[h]),
                          "sign changed": bool(torch.sign(before[h]) != torch.sign(after[h]))}
                         for h in heads])


# %% [markdown]
# ## Knocking out the Name Movers
#
# The knockout is the paper's mean ablation: each Name Mover's output **at END** is replaced by
# its mean over the p_ABC prompts of the same template group, as the authors' code does
# (`experiments.py`, "Backup NM results": the Name Movers are removed at their kept position,
# "end", only). MLPs, LayerNorms and the other heads run normally. The variant, the Name Movers
# knocked out at every position (the paper's text does not say which), is shown beside it.

# %%
values = ablation.ablation_values(model, ioi, abc, "mean")
clean_ld = ablated([])  # nothing knocked out: the model
if nm.heads:
    ko_ld = ablated(knockout_spec(nm.heads))  # at END (the authors' code)
    ko_all_ld = ablated(knockout_spec(nm.heads, None))  # at every position (variant)
    drop = 1 - ko_ld.mean().item() / clean_ld.mean().item()
    drop_all = 1 - ko_all_ld.mean().item() / clean_ld.mean().item()

# %% tags=["hide-input"]
if nm.heads:
    results.record(CHAPTER, "backup.name_mover_knockout_drop.every_position", drop_all,
                   settings | {"construction": "variant: knocked out at every position"})
    results.record(CHAPTER, "backup.name_mover_knockout_drop", drop, settings)
    results.record(CHAPTER, "backup.knockout_logit_diff", ko_ld.mean().item(), settings)
    knock_rows = [("model", clean_ld.mean().item(), float("nan")),
                  (f"Name Movers ({', '.join(paper.head_name(h) for h in nm.heads)}) knocked out at END "
                   f"(authors' code, default)", ko_ld.mean().item(), drop),
                  ("... knocked out at every position (variant)", ko_all_ld.mean().item(), drop_all)]
    display(Markdown(
        f"Settings: model **{MODEL}**, N = {len(ioi)}, BOS {'prepended' if prepend_bos else 'not prepended'}, "
        f"seed {seed}, mean ablation over p_ABC per template group and position. Paper: GPT-2 small, "
        f"knockout at END (the authors' code), "
        f"the logit difference drops by {paper.NUMBERS['backup.name_mover_knockout_drop']['value']:.0%}."))
    display(tables.table(pd.DataFrame(knock_rows, columns=["run", "mean logit diff",
                                                            "drop (fraction of the model's)"]),
                         na="n/a: the reference"))
else:
    drop = None
    results.record(CHAPTER, "backup.name_mover_knockout_drop", None, settings,
                   note="no Name Movers were found on this model: nothing to knock out")
    display(Markdown(
        f"**No Name Movers were found on {MODEL}** (chapter 2's rule: {nm.rule}), so there is "
        f"nothing to knock out and no backup to look for. The evidence is the direct-effect map "
        f"below: no head passes the rule."))
glue("backup_drop", f"{drop:.1%}" if nm.heads else "n/a (no Name Movers)", display=False)
glue("backup_drop_all", f"{drop_all:.1%}" if nm.heads else "n/a", display=False)
glue("backup_drop_paper", f"{paper.NUMBERS['backup.name_mover_knockout_drop']['value']:.0%}",
     display=False)

# %% [markdown]
# Drop of the logit difference with the Name Movers knocked out at END:
# {glue:text}`backup_drop` (paper, GPT-2 small: {glue:text}`backup_drop_paper`); knocked out
# at every position: {glue:text}`backup_drop_all`.

# %% [markdown]
# ## Path patching again, with the Name Movers knocked out
#
# The experiment of chapter 2 (path patching from each head to the logits at END, x_new from
# p_ABC), with the Name Movers mean-ablated (at END, as in the authors' code, which passes the
# knockout's hooks to every path-patching run) in **every** run of the algorithm: x_orig, x_new
# and the patched runs. The score is again the change of the logit difference, as a fraction of the
# model's own (unablated) logit difference, so that before and after share one scale. The rule
# (`discovery.backup_name_movers`): the effect cut of Sec. 3.4 and, since a Backup Name Mover
# takes over the Name Movers' role, the Name Movers' own attention condition (END→IO above
# END→S1 + END→S2, chapter 2), measured in the run with the Name Movers knocked out; a head that
# drops the logit difference while attending to S is not a backup:

# %%
backup = discovery.backup_name_movers(setup, nm.heads, others=others, knockout_at=KO_AT)
print(backup.describe())
if nm.heads:  # the variant: the Name Movers knocked out at every position in every run
    backup_all = discovery.backup_name_movers(setup, nm.heads, others=others,
                                              **methods.variant("name_mover_knockout"))

# %% tags=["hide-input"]
results.record(CHAPTER, "classes.Backup Name Mover", backup.heads, settings | {"threshold": backup_threshold})
if nm.heads:
    display(Markdown(
        f"Backup Name Movers with the Name Movers knocked out at END (default): "
        f"{', '.join(map(paper.head_name, backup.heads)) or 'none'}; at every position (variant): "
        f"{', '.join(map(paper.head_name, backup_all.heads)) or 'none'}."))

# %% [markdown]
# Before and after, side by side, on one colour scale (blue: patching the head lowers the logit
# difference, as for a Name Mover; red: it raises it, as for a Negative Name Mover). Left: the
# Name Movers are outlined; right: the Backup Name Movers.

# %%
before = discovery.direct_effects(setup).relative
after = backup.effect if nm.heads else before
top = float(max(before.abs().max(), after.abs().max())) or 1.0
left = plots.head_heatmap(before, "Direct effect on the logits (model)",
                          "effect / logit diff", highlight=nm.heads, vmax=top)
right_title = ("... with the Name Movers knocked out" if nm.heads
               else "(no knockout: no Name Movers)")
right = plots.head_heatmap(after, right_title, "effect / logit diff",
                           highlight=backup.heads, vmax=top)
plots.show(alt.hconcat(left, right))

# %% [markdown]
# The heads whose effect changed most, and every head the rule selected:

# %%
if nm.heads:
    change = change_table(before, after, backup.heads)  # largest change first
    display(change.head(12).style.format(precision=3).hide(axis="index"))

# %% tags=["hide-input"]
if nm.heads:
    if backup.heads:
        sel = backup.table[backup.table["selected"]].copy()
        sel["grew after knockout"] = sel["effect"] < sel["effect before knockout"]
        display(sel.style.format(precision=3).hide(axis="index"))
        grew = int(sel["grew after knockout"].sum())
        grew_text = (f"{grew} of the {len(sel)} selected heads have a larger effect than before the knockout "
                     f"(they take over); " + (f"the other {len(sel) - grew} already had it (the paper's rule does "
                                              f"not ask for growth, so they are kept)." if grew < len(sel) else
                                              "none was already that important."))
        display(Markdown(grew_text))
    else:
        grew_text = ""
        display(Markdown(f"No head outside the other classes passes the rule on {MODEL}."))

# %% [markdown]
# ## The Negative Name Movers after the knockout
#
# Before the knockout the Negative Name Movers push *against* the IO (patching them raises the
# logit difference). The table compares their effect before and after.

# %%
if nnm.heads and nm.heads:
    nnm_rows = sign_table(nnm.heads, before, after)
    flipped = int(nnm_rows["sign changed"].sum())
    display(tables.table(nnm_rows))

# %% tags=["hide-input"]
if nnm.heads and nm.heads:
    results.record(CHAPTER, "backup.negative_name_movers_sign_changes", flipped, settings)
    nnm_text = (f"{flipped} of the {len(nnm.heads)} Negative Name Movers change sign after the knockout "
                f"(before: {', '.join(f'{b:+.1%}' for b in nnm_rows['before'])}; after: "
                f"{', '.join(f'{a:+.1%}' for a in nnm_rows['after'])}).")
else:
    why = "no Negative Name Movers were found" if not nnm.heads else "no Name Movers were knocked out"
    nnm_text = f"Not measurable on {MODEL}: {why}."
display(Markdown(nnm_text))

# %% [markdown]
# ## Do the backups compensate?
#
# Knocking out the Name Movers together with the backups will lower the logit difference, but
# that alone does not show compensation: the backups may simply matter on their own. The test
# is an interaction. Compare what removing the Name Movers costs **with** the backups in place
# (the first knockout above) and **without** them (backups knocked out in both runs). If the
# backups take over the Name Movers' job, the Name Movers cost more once the backups are gone.

# %%
if nm.heads and backup.heads:
    backup_ld, both_ld = knocked(backup.heads), knocked(nm.heads + backup.heads)
    F = clean_ld.mean().item()
    nm_cost_with, nm_cost_without = F - ko_ld.mean().item(), backup_ld - both_ld
    both_drop = 1 - both_ld / F
    compensates = nm_cost_without > nm_cost_with + compensation_margin * abs(F)

# %% tags=["hide-input"]
if nm.heads and backup.heads:
    results.record(CHAPTER, "backup.name_mover_and_backup_knockout_drop", both_drop, settings)
    results.record(CHAPTER, "backup.name_mover_cost_with_backups", nm_cost_with, settings)
    results.record(CHAPTER, "backup.name_mover_cost_without_backups", nm_cost_without, settings)
    display(tables.table(pd.DataFrame([("model", F), ("Name Movers knocked out", ko_ld.mean().item()),
                          ("Backup Name Movers knocked out", backup_ld),
                          ("both knocked out", both_ld)], columns=["run", "mean logit diff"])))
    comp_text = (f"Removing the Name Movers costs {nm_cost_with:.2f} of logit difference with the backups in "
                 f"place and {nm_cost_without:.2f} once they are gone: " +
                 ("the backups were covering for the Name Movers." if compensates else
                  f"no clear compensation by these heads (the difference is under {compensation_margin:.0%} of "
                  f"the logit difference)."))
else:
    both_drop, compensates = None, None
    comp_text = f"Not run on {MODEL}: " + ("no Name Movers." if not nm.heads else "no Backup Name Movers were found.")
display(Markdown(comp_text))

# %% [markdown]
# ## Against the planted circuit
#
# On a planted model (`ioi-planted`, `gpt2-planted`) the answer is known: its weights were built
# to put each class in chosen heads ({ref}`appendix-stand-ins`). The Backup Name Movers this chapter discovered, beside the planted ones
# (precision: the share of discovered heads that were planted; recall: the share of planted heads
# that were discovered). Any other model has no planted circuit, and no table appears.

# %%
tables.table(truth.against_planted(model, [backup]))

# %% [markdown]
# ## Comparison with the paper

# %% tags=["hide-input"]
cmp = paper.compare_heads(backup.heads, paper.CIRCUIT["Backup Name Mover"])
display(pd.DataFrame([{"class": "Backup Name Mover",
                       "found": " ".join(paper.head_name(h) for h in backup.heads) or "none",
                       "paper (GPT-2 small)": " ".join(paper.head_name(h) for h in paper.CIRCUIT["Backup Name Mover"]),
                       **{k: " ".join(v) for k, v in cmp.items()}}]).style.hide(axis="index"))
display(tables.table(pd.DataFrame([{
    "claim": paper.NUMBERS["backup.name_mover_knockout_drop"]["claim"],
    "paper (GPT-2 small)": paper.NUMBERS["backup.name_mover_knockout_drop"]["value"],
    MODEL: drop, "settings": f"N={len(ioi)}, BOS={prepend_bos}, mean ablation over p_ABC at {KO_AT}"}])))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL) + " Head indices of GPT-2 small (12 x 12) mean nothing "
                     "here, so 'match' compares numbers, not functions."))

# %% [markdown]
# ## Takeaway

# %% tags=["hide-input"]
if not nm.heads:
    verdict = (f"**{MODEL}** has no Name Movers by chapter 2's rule, so it has nothing for backups to "
               f"stand in for: the backup mechanism cannot be tested on it.")
else:
    change = (f"lowers the logit difference by **{drop:.0%}**" if drop >= 0 else
              f"*raises* the logit difference by **{-drop:.0%}**")
    verdict = (f"Knocking out the {len(nm.heads)} Name Mover(s) of **{MODEL}** {change} (paper, GPT-2 small: a "
               f"{paper.NUMBERS['backup.name_mover_knockout_drop']['value']:.0%} drop). ")
    verdict += ("Most of the performance survives. " if drop < 0.5 else
                "Most of the performance is lost: little compensation on this model. ")
    if backup.heads:
        verdict += (f"The repeated path patching finds **{len(backup.heads)} Backup Name Mover(s)** "
                    f"({', '.join(paper.head_name(h) for h in backup.heads)}; paper: "
                    f"{len(paper.CIRCUIT['Backup Name Mover'])}). {grew_text} {comp_text}")
    else:
        verdict += f"No head outside the other classes passes the {backup_threshold:.0%} rule after the knockout."
    verdict += " " + nnm_text
display(Markdown(verdict))
