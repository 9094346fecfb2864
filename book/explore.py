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
# # Explore the circuit yourself
#
# The chapters follow the paper's argument one experiment at a time. This page lets you look
# around instead: pick any head and see where it attends, switch between the path-patching
# experiments of the search, take classes out of the circuit and watch faithfulness move.
#
# Two kinds of interactivity, both computed by the same package functions as the chapters:
#
# * **In this page, without Python.** The first three figures carry their data and their
#   controls (dropdowns, checkboxes, click and hover) in the page itself. Everything was
#   computed when the book was built, on the model named below.
# * **With a running kernel.** The last section builds
#   [ipywidgets](https://ipywidgets.readthedocs.io) explorers that recompute on demand: type
#   your own prompt, change the receiver or the dataset size of path patching, tick classes
#   in and out of the circuit. Open this page as a notebook (launch buttons at the top of the
#   page: Colab, Binder, or download the notebook) and run it. In the static page each
#   explorer shows its default view.
#
# The head classes are discovered here exactly as in the chapters
# (`ioi_helpers.discovery.all_classes`, with the rules printed below; results are cached
# on disk, so this is cheap once the chapters ran).

# %% tags=["parameters"]
model_name = None  # None: $IOI_MODEL, else "gpt2" (GPT-2 small, the paper's model)
n_prompts = 100  # the discovery chapters' default: the classes come from their cache
seed = 0
prepend_bos = False  # the paper's choice: no <|endoftext|> at the start
template_set = "mixed"
# shared by every chapter (discovery.setup_from): the classes' rule thresholds, as fractions
# of the clean logit diff; each class's chapter explains its value
name_mover_threshold = 0.05
s_inhibition_threshold = 0.05
induction_threshold = 0.03
previous_threshold = 0.03
backup_threshold = 0.02

# %% tags=["hide-input"]
import torch
from IPython.display import Markdown, display

from ioi_helpers import discovery, models, paper, plots, widgets

torch.set_grad_enabled(False)
model = models.load_model(model_name)
MODEL = model.ioi_model_name
setup = discovery.setup_from(model, globals())
display(Markdown(f"**Model:** {models.describe_model(model)}. Data: N = {n_prompts} prompts "
                 f"('{template_set}' templates), seed {seed}, BOS "
                 f"{'prepended' if prepend_bos else 'not prepended'}."))
if not models.is_gpt2_small(model):
    display(Markdown(paper.stand_in_note(MODEL)))

# %% tags=["hide-input"]
# the seven classes, as the discovery chapters find them (read from their cache when they ran)
classes = discovery.all_classes(setup)
print("\n\n".join(c.describe() for c in classes.values()))

# %% [markdown]
# ## Pick a head, see where it attends
#
# On top: the direct effect of each head on the logit difference (path patching from the head to
# the logits, as in the Name Mover chapter; blue = patching the head lowers the logit
# difference). Hover a cell to see the head's name, the class it was given here and its
# effect. Pick a head in the dropdown under the figure, or click a cell: below the heatmap
# are that head's name, class and effect, and its attention pattern on two prompts (one of each order, ABBA and BABA).
# Rows are the attending (query) tokens, columns the tokens attended to; a Name Mover should
# light up from the last token to the IO name.

# %%
direct = discovery.direct_effects(setup)
orders = setup.ioi.orders
examples = [orders.index(o) for o in ("ABBA", "BABA") if o in orders]
patterns, tokens = widgets.attention_data(model, setup.ioi, examples)
named = [h for c in classes.values() for h in c.heads]
plots.show(plots.attention_explorer_chart(
    direct.relative, patterns, tokens, classes=widgets.class_heads(classes),
    value_label="direct effect", default=named[0] if named else None,
    title=f"Direct effect on the logit difference ({MODEL}, N={n_prompts})",
    prompt_titles=[f"{orders[i]}: {setup.ioi.texts[i]}" for i in examples]))

# %% [markdown]
# ## Every path-patching experiment of the search
#
# The search for the circuit is a chain of path-patching experiments: from every head to the
# logits (Name Movers), to the Name Movers' queries (S-Inhibition heads), to the S-Inhibition
# heads' keys and values (Induction and Duplicate Token heads), to the Induction heads' keys
# (Previous Token heads); and from every head to the logits again with the Name Movers knocked
# out (Backup Name Movers). Choose the experiment in the dropdown; hover a cell for the head, its
# class and its score, (patched - clean) / |clean logit difference|. Heads that belong to a
# class are outlined. An experiment appears only if its receivers were found on this model.

# %%
effects, about = {}, {}
for c in classes.values():
    if c.receivers != "none" and c.receivers not in effects:
        effects[c.receivers] = c.effect
        found_here = [n for n, k in classes.items() if k.receivers == c.receivers]
        about[c.receivers] = f"finds: {', '.join(found_here)} (kept at {c.kept_at})"
not_run = [f"{n} ({c.rule})" for n, c in classes.items() if c.receivers == "none"]
plots.show(plots.patching_explorer_chart(
    effects, widgets.class_heads(classes), value_label="relative effect",
    descriptions=about,
    title=f"Path patching, senders = every head ({MODEL}, N={n_prompts})"))

# %% tags=["remove-input"]
display(Markdown(f"{len(effects)} experiment(s) shown. " + (
    "Not run on this model, because an earlier class is empty: " + "; ".join(not_run) + "."
    if not_run else "Every step of the search ran.")))

# %% [markdown]
# ## Take classes out of the circuit
#
# Faithfulness compares the circuit's logit difference F(C) with the model's F(M) (Sec. 4 of
# the paper: F(C)/F(M) = 0.87 for the full circuit on GPT-2 small). In the circuit run every
# head outside the circuit is mean-ablated (its output replaced by its mean over p_ABC, per
# template), and each circuit head is kept only at its class's position. Untick a class to
# remove its heads from the circuit. Every class found has a checkbox, and every combination
# was computed when the page was built; with every box ticked the circuit is the full one.

# %%
ablation_explorer = widgets.AblationExplorer(setup, classes)
kept, rows = ablation_explorer.subsets()
plots.show(plots.ablation_explorer_chart(
    rows, kept, title=f"F(C) against F(M) ({MODEL}, N={n_prompts}, mean ablation)"))

# %% tags=["remove-input"]
from myst_nb import glue

full = ablation_explorer.faithfulness()  # every class found: the live explorer's default view
fixed = ablation_explorer.always_kept()
found = ablation_explorer.selected()
glue("explore_full", (
    f"With every box ticked (the classes {', '.join(found)}) the circuit is the full one"
    + (f" ({', '.join(fixed)} have no box and stay in it)" if fixed else "")
    + f": F(C) = {full.F_C:.3f} and F(M) = {full.F_M:.3f}, so F(C)/F(M) = {full.ratio:.3f}"
    if found else "No class was found on this model, so there is nothing to tick: the figure shows "
    f"the circuit with every head ablated, F(C) = {full.F_C:.3f} and F(M) = {full.F_M:.3f}, so "
    f"F(C)/F(M) = {full.ratio:.3f}"), display=False)
glue("explore_paper_faithfulness", paper.NUMBERS["circuit.faithfulness"]["value"], display=False)

# %% [markdown]
# {glue:text}`explore_full` (paper, GPT-2 small, its full circuit:
# {glue:text}`explore_paper_faithfulness`). The live ablation explorer at the bottom of the
# page starts from the same full circuit.

# %% [markdown]
# ## Live explorers (need a running kernel)
#
# Each cell below builds an explorer. In Jupyter, Colab or Binder its controls recompute the
# figure through the package (a path-patching run on GPT-2 small takes seconds to a minute on
# a laptop CPU). In this static page each shows its default view.
#
# **Prompt explorer.** Pick a prompt of the dataset or type your own, set the IO and S names
# (single tokens, both in the prompt), and choose a head: the title gives the logit
# difference, the left panel the head's attention, the right panel the top predictions.

# %%
widgets.PromptExplorer(model, classes, setup.ioi)

# %% [markdown]
# **Path-patching explorer.** Choose the receiver (the logits, or the queries, keys or values of
# a discovered class at a position), a sender class whose heads are patched together, and the
# number of prompts; the heatmap is recomputed with `patching.path_patch`.

# %%
widgets.PatchingExplorer(setup, classes)

# %% [markdown]
# **Ablation explorer.** Tick classes in or out of the circuit; F(C) and F(M) are recomputed
# with the `ablation` module (the combinations above are already cached in it).

# %%
ablation_explorer
