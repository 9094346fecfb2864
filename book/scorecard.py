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
# # Scorecard: every number of the paper, reproduced
#
# Each chapter records the numbers it computes while it executes (a small results file per
# chapter, written by `ioi_helpers.results`). This page joins them with the paper's "numbers to
# reproduce" (`ioi_helpers.paper.NUMBERS`). Nothing here is typed in: a chapter that ran but did
# not record a value makes this page fail to build, and says which.
#
# Each number has a **tolerance**, stated with its reason in `ioi_helpers.paper`: ours
# **reproduces** the paper's when it lies within it. A number the model sets by construction
# (a calibrated stand-in) is **calibrated, not reproduced**, however close; a number the chapter
# could not measure on this model (for instance with no Name Movers found) is **not measured**;
# a number whose chapter did not run in this build is **not run**.

# %% tags=["parameters", "hide-input"]
model_name = None  # unused here: the scorecard reports whatever model the chapters ran on
results_dir = None  # None: $IOI_RESULTS_DIR (set by the pipeline), else _build/results

# %% tags=["hide-input"]
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Markdown, display

from ioi_helpers import layout, methods, models, paper, plots, results

recorded = results.load_all(Path(results_dir) if results_dir else None, one_run=True)
if recorded.notes:  # files of another run (model, code, sizes) or unreadable: shown as not run
    display(Markdown("**Set aside, counted as not run:**\n\n" + "\n".join(f"- {n}" for n in recorded.notes)))
missing = [
    f"{key} (chapter {spec['chapter']})"
    for key, spec in paper.NUMBERS.items()
    if spec["chapter"] in recorded and key not in recorded[spec["chapter"]]["values"]
]
if missing:
    raise RuntimeError(
        "the scorecard cannot be built: these numbers were not recorded by their chapter, "
        "although it ran:\n  " + "\n  ".join(missing))
models_used = sorted({results.model_id(r["model"]) for r in recorded.values()})
display(Markdown(f"Model(s): **{', '.join(models_used) or 'none'}**; chapters recorded: "
                 f"{', '.join(sorted(recorded)) or 'none'}."))
if models_used != ["gpt2"]:
    display(Markdown(paper.stand_in_note(", ".join(models_used))))


# %% tags=["hide-input"]
def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _paper(spec: dict) -> str:
    """The paper's value with its tolerance: '3.56 ± 0.2', '> 0.81 − 0.05', '< 0'."""
    if spec["value"] is None:
        return spec.get("expect", "n/a")
    tol, bound = spec.get("tolerance", 0), spec.get("bound")
    text = {"lower": "≥ ", "upper": "≤ "}.get(bound, "") + _fmt(spec["value"])
    if tol:
        text += {"lower": f" − {tol:g}", "upper": f" + {tol:g}"}.get(bound, f" ± {tol:g}")
    return text


rows = []
for key, spec in paper.NUMBERS.items():
    chapter = recorded.get(spec["chapter"])
    entry = chapter["values"][key] if chapter else {}
    ours = entry.get("value")
    model = chapter["model"] if chapter else ""
    low, high = paper.tolerance_band(spec)
    rows.append({
        "claim": spec["claim"], "paper": spec["value"], "ours": ours if isinstance(ours, (int, float)) else None,
        "low": low, "high": high, "unit": paper.unit(key), "where": spec["where"], "model": model or "-",
        "verdict": paper.verdict(spec, ours, model, entry, ran=chapter is not None),
        "paper (GPT-2 small) ± tolerance": _paper(spec), "ours (shown)": _fmt(ours),
        "tolerance: why": spec.get("tolerance_reason", ""),
        "settings": ", ".join(f"{k}={v}" for k, v in entry.get("settings", {}).items()
                              if k in ("N", "n_prompts", "prepend_bos", "ablation", "template_set", "seed",
                                       "positions", "K")),
        "construction": entry.get("settings", {}).get("construction") or methods.construction_for(key),
        "chapter": spec["chapter"],
    })
scorecard = pd.DataFrame(rows)
counts = scorecard["verdict"].value_counts()
display(Markdown(" · ".join(f"**{counts[v]}** {v}" for v in paper.VERDICTS if v in counts)
                 + f" (of {len(scorecard)} numbers)."))
(scorecard[["claim", "paper (GPT-2 small) ± tolerance", "ours (shown)", "verdict"]]
 .rename(columns={"ours (shown)": "ours"})
 .style.hide(axis="index"))

# %% tags=["hide-input"]
plots.show(plots.scorecard_chart(scorecard))

# %% tags=["hide-input"]
detail = scorecard[["claim", "where", "chapter", "model", "settings", "construction", "tolerance: why"]]
display(HTML("<details><summary>Settings, constructions and tolerances of every number</summary>\n"
             + detail.to_html(index=False, escape=True) + "\n</details>"))

# %% [markdown]
# ## Head classes: discovered vs the paper and the planted truth
#
# Each chapter derives its head classes with a printed rule and records them under
# `classes.<name>`. They are scored, class by class, against each reference this model has:
# the heads **planted** in it (a model built with a known circuit, `ioi-planted` or
# `gpt2-planted`: chapter 7 records that truth as `truth.planted`), and **the paper's heads**
# where the paper's head indices name this model's heads (GPT-2 small, `gpt2-planted`). On any
# other model the paper's list is shown for reference only: its indices name other heads.

# %% tags=["hide-input"]
found = {}
truth_planted = None
for chapter in recorded.values():
    for key, entry in chapter["values"].items():
        if key.startswith("classes."):
            found[key.removeprefix("classes.")] = [tuple(h) for h in entry["value"]]
        elif key == "truth.planted" and entry["value"]:
            truth_planted = {c: [tuple(h) for h in hs] for c, hs in entry["value"].items()}
PAPER_LAYOUT = len(models_used) == 1 and models.name_has_paper_layout(models_used[0])
PLANTED = len(models_used) == 1 and models.name_is_planted(models_used[0])  # a known truth


def _count(summary, what):
    text = (f"**{summary['heads']} of {summary['of_heads']}** {what} heads found in their class; "
            f"**{summary['classes']} of {summary['of_classes']} classes** recovered exactly")
    return text + (f" ({len(summary['not_run'])} not recorded: {', '.join(summary['not_run'])})"
                   if summary["not_run"] else "")


if PLANTED and truth_planted:
    table, summary = layout.head_match(found, truth_planted, "planted")
    display(Markdown("**Against the planted truth:** " + _count(summary, "planted") + "."))
    display(table.drop(columns=["precision", "recall"]).style.hide(axis="index"))
elif PLANTED:
    display(Markdown("**Against the planted truth:** not scored: no chapter of this run recorded it "
                     "(`truth.planted`, recorded by chapter 7)."))
if PAPER_LAYOUT:
    table, summary = layout.head_match(found, paper.CIRCUIT, "paper (GPT-2 small)")
    display(Markdown("**Against the paper's heads:** " + _count(summary, "of the paper's") + ". " + (
        "This model's heads were *planted* at the paper's positions: the match shows that the method "
        "recovers a circuit planted at the paper's heads, not that GPT-2 small has it."
        if PLANTED else "These are GPT-2 small's own heads, as in the paper.")))
    display(table.drop(columns=["precision", "recall"]).style.hide(axis="index"))
else:
    class_rows = []
    for name, heads in paper.CIRCUIT.items():
        ours = found.get(name)
        cmp = paper.compare_heads(ours, heads) if ours is not None else None
        class_rows.append({
            "class": name,
            "paper (GPT-2 small)": " ".join(paper.head_name(h) for h in heads),
            "discovered": "not run" if ours is None else (" ".join(paper.head_name(h) for h in ours) or "none found"),
            "match": "" if cmp is None else " ".join(cmp["match"]),
            "missing": "" if cmp is None else " ".join(cmp["missing"]),
            "extra": "" if cmp is None else " ".join(cmp["extra"]),
        })
    display(Markdown("**The paper's heads, for reference only:** this model's head layout is not the "
                     "paper's, so its indices name other heads and no head-by-head count is made."))
    display(pd.DataFrame(class_rows).style.hide(axis="index"))
