"""The methods page's data (ioi_helpers.methods) against the functions that implement each
default: a default changed in the code without the page (or the reverse) fails here."""

from __future__ import annotations

import inspect

from ioi_helpers import ablation, dataset, discovery, methods, paper, scores, signals


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_each_default_is_the_implementing_functions_default():
    d = methods.default
    assert _default(discovery.induction_and_duplicate, "receiver_input") == d("induction_receivers")["receiver_input"] == "v"
    assert _default(discovery.s_inhibition_share, "receiver_input") == "v"
    assert _default(discovery.backup_name_movers, "knockout_at") == d("name_mover_knockout")["knockout_at"] == "END"
    assert _default(scores.attention_projection, "s_position") == d("attention_projection")["s_position"] == "S1+S2"
    assert _default(scores.attention_projection_correlation, "s_position") == "S1+S2"
    assert _default(dataset.signal_variant, "construction") == d("token_position")["construction"] == "code"
    assert _default(signals.token_position, "construction") == "code"
    assert _default(dataset.make_adversarial_dataset, "construction") == d("adversarial")["construction"] == "code"
    assert d("adversarial")["n_prompts"] == 500
    assert _default(ablation.completeness, "k_positions") == d("completeness_removal")["k_positions"] == "kept"
    assert _default(ablation.greedy_completeness, "k_positions") == "kept"
    g = d("greedy")
    assert (_default(ablation.greedy_completeness, "n_sets"), _default(ablation.greedy_completeness, "n_steps"),
            _default(ablation.greedy_completeness, "candidates")) == (g["n_sets"], g["n_steps"], g["candidates"]) == (10, 10, 10)
    assert g["candidates_naive"] == 5
    assert _default(ablation.random_sets, "n_sets") == d("random_sets")["n_sets"] == 100
    assert _default(ablation.random_sets, "p") == d("random_sets")["p"] == 0.5
    assert (_default(dataset.make_ioi_dataset, "template_set"), _default(dataset.make_ioi_dataset, "prepend_bos")) == (
        d("dataset")["template_set"], d("dataset")["prepend_bos"])


def test_table_has_one_row_per_experiment_and_every_column():
    t = methods.table()
    assert len(t) == len(methods.METHODS)
    assert list(t.columns) == ["experiment", "paper's text", "authors' code (file, function)",
                               "this book's default", "variant offered", "chapter"]
    assert t.notna().all().all() and (t != "").all().all()


def test_every_paper_number_names_its_construction():
    for key in paper.NUMBERS:
        assert methods.methods_for(key), key
        assert methods.construction_for(key) != "-"
    assert methods.methods_for("circuit.greedy_incompleteness") == ("greedy", "completeness_removal")
    assert methods.methods_for("circuit.F_C") == ("faithfulness_ablation",)
