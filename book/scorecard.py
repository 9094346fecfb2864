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
# reproduce" (`ioi_helpers.paper.NUMBERS`). Nothing here is typed in: a chapter that did not
# record a value makes this page fail to build, and says which. The "construction" column says
# how each number was built (the authors' code or a named variant; see the Methods appendix).

# %% tags=["parameters"]
model_name = None  # unused here: the scorecard reports whatever model the chapters ran on
results_dir = None  # None: $IOI_RESULTS_DIR (set by the pipeline), else _build/results

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from ioi_helpers import methods, paper, results

recorded = results.load_all(Path(results_dir) if results_dir else None)
missing = [
    f"{key} (chapter {spec['chapter']})"
    for key, spec in paper.NUMBERS.items()
    if key not in recorded.get(spec["chapter"], {}).get("values", {})
]
if missing:
    raise RuntimeError(
        "the scorecard cannot be built: these numbers were not recorded by their chapter "
        "(did the chapter run in this build?):\n  " + "\n  ".join(missing))
models_used = sorted({r["model"] for r in recorded.values()})
display(Markdown(f"Chapters recorded: {', '.join(sorted(recorded))}. Model(s): **{', '.join(models_used)}**."))
if models_used != ["gpt2"]:
    display(Markdown(paper.stand_in_note(", ".join(models_used))))


# %%
def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _settings(s: dict) -> str:
    keep = ("N", "model", "prepend_bos", "ablation", "template_set", "seed", "positions", "K")
    return ", ".join(f"{k}={s[k]}" for k in keep if k in s)


rows = []
for key, spec in paper.NUMBERS.items():
    chapter = recorded[spec["chapter"]]
    entry = chapter["values"][key]
    ours, theirs = entry["value"], spec["value"]
    diff = ours - theirs if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) else None
    rows.append({
        "claim": spec["claim"],
        "where": spec["where"],
        "paper (GPT-2 small)": _fmt(theirs) if theirs is not None else spec.get("expect", "n/a"),
        "ours": _fmt(ours),
        "ours - paper": _fmt(diff),
        "model": chapter["model"],
        "settings": _settings(entry["settings"]),
        # which construction produced the number: the chapter's own record, else the
        # experiment's default (ioi_helpers.methods; see the Methods appendix)
        "construction": entry["settings"].get("construction") or methods.construction_for(key),
        "chapter": spec["chapter"],
    })
scorecard = pd.DataFrame(rows)
scorecard.style.hide(axis="index")

# %% [markdown]
# ## Head classes: discovered vs the paper
#
# Each chapter derives its head classes with a printed rule and records them under
# `classes.<name>`; the paper's lists are shown beside them.

# %%
found = {}
for chapter in recorded.values():
    for key, entry in chapter["values"].items():
        if key.startswith("classes."):
            found[key.removeprefix("classes.")] = [tuple(h) for h in entry["value"]]
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
pd.DataFrame(class_rows).style.hide(axis="index")
