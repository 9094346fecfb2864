"""How each experiment is built: the paper's text, the authors' code, this book's default and
the variant it offers. One row per experiment.

The published numbers came from the authors' code (redwoodresearch/Easy-Transformer, commit
ea15315, branch main), which in places differs from the paper's text. The book's defaults
follow the code; where the text (or another published implementation) differs, the variant is
one parameter away. The appendix "Methods" page renders :data:`METHODS`; the chapters read
their defaults from it (:func:`default`), and the defaults themselves are read here from the
modules that implement them (a test checks each function's signature against them), so the
page cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from . import ablation, dataset, discovery, paper, scores


@dataclass(frozen=True)
class Method:
    key: str
    experiment: str
    chapter: str
    paper: str  # what the paper's text says (section)
    code: str  # the authors' code: file and function
    default: str  # this book's default, in words
    variant: str  # the variant offered, in words ("" if none)
    params: dict = field(default_factory=dict)  # the default, as parameter values
    variant_params: dict = field(default_factory=dict)
    construction: str = "authors' code"  # short label for the scorecard


_GREEDY = paper.GREEDY
_RANDOM = paper.RANDOM_SETS

METHODS: dict[str, Method] = {m.key: m for m in [
    Method(
        "dataset", "The prompt distribution p_IOI and p_ABC", "01_task",
        "15 templates (App. E, Fig. 14), all described; p_ABC: the three name slots replaced by "
        "three unrelated names (Sec. 2)",
        "easy_transformer/ioi_dataset.py, IOIDataset(prompt_type=\"mixed\"): BABA templates 1-7 and "
        "their ABBA twins (14 groups); N = 100 in the Sec. 3-4 scripts; no BOS",
        "\"mixed\" templates (14 groups), no BOS, N = 100 per experiment",
        "template_set=\"all\" (the 15 of the text, 30 with both orders); prepend_bos=True",
        {"template_set": "mixed", "prepend_bos": False, "n_prompts": 100},
        {"template_set": "all", "prepend_bos": True},
        "authors' code (mixed templates)"),
    Method(
        "attention_projection", "Attention vs projection of the Name Movers' output", "02_name_movers",
        "Sec. 3.1, Fig. 3: attention to a name vs the output projected on its unembedding",
        "easy_transformer/ioi_utils.py, scatter_attention_and_contribution: attention to S = "
        "attention to S1 + attention to S2",
        "attention to S = S1 + S2 summed (scores.attention_projection, s_position=\"S1+S2\")",
        "s_position=\"S1\" (ARENA's IOI exercises)",
        {"s_position": scores.S_ATTENTION}, {"s_position": "S1"},
        "authors' code (S1 + S2)"),
    Method(
        "name_mover_knockout", "Knocking out the Name Movers (and the backup search)",
        "06_backup_name_movers",
        "Sec. 3.4: knocking out the Name Movers; the position is not stated",
        "experiments.py (repository root), \"Backup NM results\": do_circuit_extraction("
        "heads_to_remove=get_heads_circuit({\"name mover\": [9.9, 9.6, 10.0]})) = mean-ablated at "
        "\"end\" only, also as extra_hooks in every path-patching run",
        "mean ablation over p_ABC at END only, in the knockout and in every run of the backup "
        "path patching (discovery.backup_name_movers, knockout_at=\"END\")",
        "knockout_at=None: at every position (the book's earlier construction)",
        {"knockout_at": discovery.KNOCKOUT_POSITION}, {"knockout_at": None},
        "authors' code (END only)"),
    Method(
        "token_position", "Token vs position signal (S-Inhibition outputs patched)", "03_s_inhibition",
        "App. A, Fig. 9: six variants, token signal {orig, random, inverted} x position signal "
        "{orig, inverted}; the prompts' slots are not spelled out",
        "experiments.py (repository root), \"Token and position signal results\": "
        "signal_specific_datasets via IOIDataset.gen_flipped_prompts; (IO, S1, S2) = ABB, DCC, BAA, "
        "BAB, CDC, ABA: the random variants replace the IO's name too",
        "dataset.signal_variant(construction=\"code\"): random/orig D C C, random/inverted C D C",
        "construction=\"keep-io\": random/orig A C C, random/inverted C A C (the book's earlier "
        "construction; not from the paper's text)",
        {"construction": "code"}, {"construction": "keep-io"},
        "authors' code (DCC / CDC)"),
    Method(
        "induction_receivers", "Finding Induction and Duplicate Token heads", "04_induction_and_duplicate_token",
        "Sec. 3.3: path patching to the S-Inhibition heads' keys and values at S2",
        "experiments.py (repository root), \"S-Inhibition patching\": plot_path_patching with "
        "receiver_hooks = blocks.{l}.attn.hook_v of the S-Inhibition heads, position \"S2\" "
        "(values only)",
        "path patching to the S-Inhibition heads' values at S2 "
        "(discovery.induction_and_duplicate, receiver_input=\"v\")",
        "receiver_input=\"kv\": keys and values, as the paper's text",
        {"receiver_input": discovery.S2_RECEIVER_INPUT}, {"receiver_input": "kv"},
        "authors' code (values)"),
    Method(
        "previous_token_rule", "Finding Previous Token heads", "05_previous_token",
        "Sec. 3.3: path patching to the Induction heads' keys at S1+1; the heads attend to the "
        "previous token and copy the subject there",
        "no path patching for this step in the final experiments.py; \"Validation outside of IOI\" "
        "checks the class by attention to the previous token on repeated random tokens (offset -1)",
        "effect through the Induction heads' keys at S1+1 <= -3%, and attention S1+1->S1 > the "
        "largest attention from S1+1 to any other earlier position (means the same on ABBA and BABA)",
        "none: the book's earlier rule (S1+1->S1 > S1+1->IO) held for every head on BABA prompts, "
        "where the IO comes after S1+1",
        {}, {}, "book's rule (paper's description)"),
    Method(
        "faithfulness_ablation", "The knockout of faithfulness, completeness and minimality",
        "07_circuit_evaluation",
        "Sec. 4: mean ablation over p_ABC; circuit heads kept at their class's position",
        "easy_transformer/ioi_circuit_extraction.py, do_circuit_extraction(mean_dataset=abc_dataset) "
        "with mean_by_groups=True; RELEVANT_TOKENS: END / S2 / S+1",
        "mean over the matched p_ABC prompts per template group and position; kept positions",
        "resample or zero ablation, all positions kept, other p_ABC sizes (sensitivity table)",
        {"ablation_method": "mean"}, {"ablation_method": "resample"},
        "authors' code (mean ablation, kept positions)"),
    Method(
        "completeness_removal", "Removing K in completeness: F(M\\K) and F(C\\K)", "07_circuit_evaluation",
        "Sec. 4.1: |F(C\\K) - F(M\\K)|; how K leaves M is not stated",
        "easy_transformer/completeness.py: cobble_eval adds model_rem_hooks = "
        "do_circuit_extraction(heads_to_remove=heads_to_keep), i.e. K removed from M only at its "
        "kept positions (END / S2 / S1+1); circuit_eval removes K from C everywhere",
        "K removed from M at its kept positions, from C everywhere (ablation.completeness, "
        "k_positions=\"kept\")",
        "k_positions=\"all\": K removed from M at every position (the book's earlier construction)",
        {"k_positions": "kept"}, {"k_positions": "all"},
        "authors' code (K at kept positions in M)"),
    Method(
        "completeness_classes", "Class sets K for completeness", "07_circuit_evaluation",
        "Sec. 4.1, Fig. 6: one K per class",
        "easy_transformer/ioi_circuit_extraction.py, CIRCUIT: 6 classes, the Backup Name Movers "
        "folded into \"name mover\"; completeness.py loops over its keys plus \"none\"",
        "the authors' grouping: 6 class sets, Backup Name Movers inside the Name Movers "
        "(ablation.fold_backups)",
        "the paper's 7 classes (Backup Name Movers as their own set)",
        {"grouping": "code"}, {"grouping": "paper"},
        "authors' code (6 class sets)"),
    Method(
        "random_sets", "Random sets K for completeness", "07_circuit_evaluation",
        "Sec. 4.1: random subsets of the circuit",
        "easy_transformer/completeness.py, \"Do random search too\": 100 sets, each node in with "
        "probability 1/2 (torch.randint(0, 2))",
        f"{_RANDOM['n_sets']} random sets, p = {_RANDOM['p']}",
        "n_random_sets: fewer sets (a chapter parameter, for speed)",
        {"n_sets": _RANDOM["n_sets"], "p": _RANDOM["p"]}, {},
        "authors' code (100 random sets)"),
    Method(
        "greedy", "Greedy search for incomplete sets K", "07_circuit_evaluation",
        "Sec. 4.1, Fig. 6: a greedy search for K maximising |F(C\\K) - F(M\\K)|; up to 3.09",
        "easy_transformer/completeness.py, new_greedy_search(no_runs=10, no_iters=10, "
        "no_samples=10 if circuit_size == 26 else 5): maximises |F(C\\K) - F(M\\K)| on the same "
        "N = 100 prompts, no re-scoring. Its saved results (pts/complete_xs.pt, complete_ys.pt) "
        "give a largest incompleteness of 3.47 (26 runs; the naive circuit's 30 runs: 3.03), not the "
        "3.09 quoted",
        f"{_GREEDY['n_sets']} runs x {_GREEDY['n_steps']} steps x {_GREEDY['candidates']} candidates "
        f"({_GREEDY['candidates_naive']} for the naive circuit), on the criteria's N prompts "
        "(ablation.greedy_completeness)",
        "fewer runs/steps/candidates (chapter parameters, for a CPU)",
        {"n_sets": _GREEDY["n_sets"], "n_steps": _GREEDY["n_steps"], "candidates": _GREEDY["candidates"],
         "candidates_naive": _GREEDY["candidates_naive"]}, {},
        "authors' code (new_greedy_search)"),
    Method(
        "naive_circuit", "The naive circuit", "07_circuit_evaluation",
        "Sec. 4.1: a naive circuit of 13 heads, much less complete",
        "easy_transformer/ioi_circuit_extraction.py, NAIVE: Name Movers 9.6 9.9 10.0, S-Inhibition "
        "7.3 7.9 8.6 8.10, Induction 5.5 5.9, Duplicate Token 3.0 0.10, Previous Token 2.2 4.11",
        "GPT-2 small: the authors' 13 heads (paper.NAIVE_CIRCUIT); another model: the classes of "
        "the first path-patching steps (no Negative or Backup Name Movers)",
        "the first-step classes on GPT-2 small too",
        {"naive": "code"}, {"naive": "first steps"},
        "authors' code (NAIVE)"),
    Method(
        "minimality_k", "Sets K of the minimality test", "07_circuit_evaluation",
        "Sec. 4.2, Fig. 20: a K for each head v, |F(C\\(K u {v})) - F(C\\K)|; the appendix table "
        "of K sets is not in our reference copy",
        "easy_transformer/minimality.py, \"define the sets K\": K = v's class; Name Movers "
        "(backups included) the heads before v in 9.9, 10.0, 9.6, 10.10, 10.6, 10.2, 10.1, 11.2, "
        "9.7; 9.0 and 11.9 all eleven plus 10.7, 11.10; 5.8 and 5.9: 11.10, 10.7",
        "GPT-2 small: the code's sets (paper.MINIMALITY_K[\"code\"]); another model: the same rule "
        "on its classes grouped as the code (ablation.ordered_class_k)",
        "ARENA's sets (paper.MINIMALITY_K[\"arena\"], differ for the Backup Name Movers); "
        "same-class K on another model",
        {"k_sets": "code"}, {"k_sets": "arena"},
        "authors' code (minimality.py K)"),
    Method(
        "adversarial", "Adversarial examples (extra text naming the IO)", "08_adversarial_examples",
        "Sec. 4.4: one extra sentence naming the IO (\"... store. Mary had a good day. John gave ...\")",
        "easy_transformer/advex.py, gen_adv(ioi_dataset, model, DOUBLE_ADX_TEMPLATE, name=\"IO\"): "
        "N = 500 over the 14 mixed templates; two sentences naming the IO inserted after the last "
        "\".\" (else \",\")",
        f"the code's construction (dataset.make_adversarial_dataset, construction=\"code\"), "
        f"N = {paper.ADVERSARIAL_N}, mixed templates",
        "construction=\"paper\": one sentence, templates with a sentence before S2",
        {"construction": "code", "n_prompts": paper.ADVERSARIAL_N, "template_set": "mixed"},
        {"construction": "paper"},
        "authors' code (advex.py, two sentences)"),
]}

# Which experiment produced each of the paper's numbers (paper.NUMBERS keys, by prefix).
NUMBER_METHODS: dict[str, tuple[str, ...]] = {
    "baseline.": ("dataset",),
    "name_movers.attn_projection_corr": ("attention_projection",),
    "name_movers.": ("dataset",),
    "negative_name_movers.": ("dataset",),
    "s_inhibition.": ("dataset",),
    "token_position.": ("token_position",),
    "backup.": ("name_mover_knockout",),
    "circuit.greedy_incompleteness": ("greedy", "completeness_removal"),
    "circuit.": ("faithfulness_ablation",),
    "minimality.": ("minimality_k", "faithfulness_ablation"),
    "mlp0.": ("faithfulness_ablation",),
    "adversarial.": ("adversarial",),
}


def default(key: str) -> dict:
    """The book's default parameters for experiment ``key`` (a copy)."""
    return dict(METHODS[key].params)


def variant(key: str) -> dict:
    """The variant's parameters for experiment ``key`` (a copy; empty when none)."""
    return dict(METHODS[key].variant_params)


def methods_for(number_key: str) -> tuple[str, ...]:
    """The experiments behind one of the paper's numbers (:data:`NUMBER_METHODS`, longest
    matching prefix)."""
    hits = [p for p in NUMBER_METHODS if number_key.startswith(p)]
    return NUMBER_METHODS[max(hits, key=len)] if hits else ()


def construction_for(number_key: str) -> str:
    """How the book built one of the paper's numbers, in words, for the scorecard."""
    return "; ".join(METHODS[k].construction for k in methods_for(number_key)) or "-"


def table() -> pd.DataFrame:
    """One row per experiment: the methods page."""
    return pd.DataFrame([{
        "experiment": m.experiment, "paper's text": m.paper, "authors' code (file, function)": m.code,
        "this book's default": m.default, "variant offered": m.variant or "-", "chapter": m.chapter,
    } for m in METHODS.values()])
