"""Every ``-p KEY VALUE`` is checked against what its parameter allows before any chapter runs.

The rules live in ``pipeline.parameter_rules`` (by name pattern) and, for a parameter no rule
names, in the type of its default in the chapters' parameters cells.
"""

from __future__ import annotations

import pytest

from conftest import REPO
from ioi_helpers import pipeline

CHAPTERS = pipeline.chapter_paths(REPO)


def real_defaults() -> dict[str, list]:
    defaults: dict[str, list] = {}
    for path in CHAPTERS:
        for name, default in pipeline.chapter_defaults(path).items():
            defaults.setdefault(name, []).append(default)
    return defaults


def test_every_chapter_parameter_has_a_rule_that_its_defaults_obey():
    defaults = real_defaults()
    assert {"n_prompts", "template_set", "greedy_n_sets", "acdc_positions"} <= set(defaults)
    for name, values in defaults.items():
        found = pipeline.parameter_rule(name, values)
        assert found is not None, f"{name}: no rule and no typed default says what it allows"
        allowed, check = found
        for value in values:
            assert value is None or check(value), f"{name}'s default {value!r} is not {allowed}"


BAD = [  # (KEY, VALUE as typed, what the error must say is allowed)
    ("n_prompts", "0", "a positive integer"),
    ("n_prompts", "abc", "a positive integer"),
    ("n_prompts", "-5", "a positive integer"),
    ("n_prompts", "2.5", "a positive integer"),
    ("greedy_n_steps", "True", "a positive integer or None"),
    ("n_random_sets", "0", "a positive integer or None"),
    ("seed", "-1", "an integer >= 0"),
    ("edge_n_prompts", "1", "an integer >= 2 or None"),
    ("edge_n_prompts", "8.0", "an integer >= 2 or None"),
    ("control_n_prompts", "1", "an integer >= 2"),
    ("prepend_bos", "1", "True or False"),
    ("template_set", "mixd", "one of 'mixed', 'all', 'baba', 'abba'"),
    ("ablation_method", "max", "one of 'mean', 'resample', 'zero'"),
    ("backup_threshold", "1.5", "a number > 0 and <= 1"),
    ("name_mover_threshold", "0", "a number > 0 and <= 1"),
    ("compensation_margin", "-0.1", "a number >= 0 and <= 1"),
    ("abc_per_group", "[]", "a non-empty list of positive integers"),
    ("acdc_positions", "['END', 'S3']", "a non-empty list of positions from 'IO', 'S1', 'S1+1', 'S2', 'END'"),
]


@pytest.mark.parametrize("key, value, allowed", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_a_bad_value_fails_in_one_line_before_any_chapter_runs(key, value, allowed, tmp_path, capfd, monkeypatch):
    def no_kernels(*args, **kwargs):
        raise AssertionError("chapters were about to run")

    monkeypatch.setattr(pipeline, "Kernels", no_kernels)
    out = tmp_path / "out"
    assert pipeline.main(["--out", str(out), "--model", "ioi-planted", "-p", key, value]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: -p {key} {value}: {key} must be {allowed} (default: "), err
    assert not out.exists()


def test_good_values_pass_and_several_bad_ones_are_named_together():
    good = {"n_prompts": 20, "n_random_sets": None, "template_set": "all", "backup_threshold": 1,
            "compensation_margin": 0, "acdc_positions": ["END"], "abc_per_group": [2],
            "prepend_bos": True, "ablation_method": "zero", "planted_seed": 3, "results_dir": "/tmp/r"}
    assert pipeline.parameters_for(CHAPTERS, good)[CHAPTERS[0]]["n_prompts"] == 20
    with pytest.raises(ValueError) as err:
        pipeline.parameters_for(CHAPTERS, {"n_prompts": 0, "seed": 1, "copy_k": 0})
    assert str(err.value).count("-p ") == 2 and "\n" not in str(err.value)
    assert "-p n_prompts 0: " in str(err.value) and "-p copy_k 0: " in str(err.value)


def test_a_parameter_no_rule_names_takes_its_defaults_type(tmp_path):
    chapter = tmp_path / "tiny.py"
    chapter.write_text('# %% tags=["parameters"]\nmodel_name = None\nlevel = 1\nscale = 0.5\nlabel = "a"\n'
                       'free = None\nfrom_code = len("ab")\n\n# %%\nprint(level)\n')
    assert pipeline.chapter_defaults(chapter) == {"model_name": None, "level": 1, "scale": 0.5, "label": "a",
                                                  "free": None, "from_code": pipeline.NOT_A_LITERAL}
    ok = {"level": -3, "scale": 2, "label": "b", "free": [1], "from_code": "anything"}
    assert pipeline.parameters_for([chapter], ok) == {chapter: ok}
    for key, value, allowed in (("level", 1.5, "an integer"), ("level", False, "an integer"),
                                ("scale", "x", "a number"), ("label", 3, "a string")):
        with pytest.raises(ValueError, match=f"^-p {key} .*: {key} must be {allowed} \\(default: "):
            pipeline.parameters_for([chapter], {key: value})
