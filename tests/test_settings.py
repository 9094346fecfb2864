"""One set of settings for every chapter: the shared discovery settings (``discovery.Setup``)
are declared, with the same defaults, by every chapter that finds or uses head classes, they
build their Setup only through ``discovery.setup_from``, and ``-p NAME VALUE`` on the pipeline
reaches each of them. One "does the model do the task" criterion (``metrics.does_task``)."""

from __future__ import annotations

import ast
import re

import pytest

import tiny_models as tm
from conftest import REPO
from ioi_helpers import discovery, metrics, pipeline

CHAPTERS = pipeline.chapter_paths(REPO)
USES_DISCOVERY = [p for p in CHAPTERS if "discovery." in p.read_text()]


def code_of(path) -> str:
    """The chapter's code cells (markdown dropped)."""
    nb = pipeline.load_chapter(path)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_the_chapters_that_find_classes_are_all_covered():
    names = {p.stem for p in USES_DISCOVERY}
    assert {"02_name_movers", "03_s_inhibition", "04_induction_and_duplicate_token", "05_previous_token",
            "06_backup_name_movers", "07_circuit_evaluation", "08_adversarial_examples"} <= names


@pytest.mark.parametrize("path", USES_DISCOVERY, ids=lambda p: p.stem)
def test_every_chapter_declares_the_shared_settings_with_the_shared_defaults(path):
    declared = pipeline.chapter_parameters(path)
    defaults = discovery.setup_defaults()
    assert set(defaults) == set(discovery.SETUP_PARAMETERS)
    for name, default in defaults.items():
        assert name in declared, f"{path.stem} does not declare {name}"
        value = ast.literal_eval(declared[name].split("=", 1)[1].split("#", 1)[0].strip())
        assert value == default, f"{path.stem}: {name} = {value!r}, the shared default is {default!r}"


@pytest.mark.parametrize("path", USES_DISCOVERY, ids=lambda p: p.stem)
def test_every_chapter_builds_its_setup_from_the_shared_settings(path):
    code = code_of(path)
    assert "discovery.Setup(" not in code, f"{path.stem} builds a Setup by hand"
    assert re.search(r"discovery\.setup_from\(\w+, globals\(\)", code), path.stem
    # no step is given a threshold of its own: the Setup carries the shared ones
    steps = "name_movers|s_inhibition|induction_and_duplicate|previous_token|backup_name_movers"
    assert not re.search(rf"discovery\.({steps})\([^)]*threshold=", code), path.stem


def test_a_pipeline_parameter_reaches_every_chapter_that_finds_classes():
    params = {"template_set": "all", "backup_threshold": 0.1, "n_prompts": 20}
    shares = pipeline.parameters_for(CHAPTERS, params)
    for path in USES_DISCOVERY:
        assert shares[path] == params, path.stem
    assert shares[next(p for p in CHAPTERS if p.stem == "01_task")]["template_set"] == "all"


def test_setup_from_takes_every_shared_setting_and_requires_them():
    model = tm.random_model()
    params = discovery.setup_defaults() | {"template_set": "all", "seed": 3, "induction_threshold": 0.2,
                                           "unrelated": 1}
    setup = discovery.setup_from(model, params)
    assert (setup.template_set, setup.seed, setup.induction_threshold) == ("all", 3, 0.2)
    assert setup.thresholds()["induction_threshold"] == 0.2
    with pytest.raises(KeyError, match="template_set"):
        discovery.setup_from(model, {k: v for k, v in params.items() if k != "template_set"})


def _name_mover_drops_by_hand(model, ds, abc) -> dict:
    """Sec. 3.1's rule by hand, from a plain run_with_cache and a literal path-patching loop
    (oracles.py): for each head attending END->IO more than END->S1 + END->S2, the drop of the
    logit diff when it is path-patched to the logits, a fraction of the clean logit diff. A head
    is a Name Mover at threshold t when its drop is >= t."""
    import torch

    from oracles import path_patch_oracle_sweep

    _, cache = model.run_with_cache(ds.tokens)
    rows = torch.arange(len(ds))

    def att(l, h, src):
        return cache[f"blocks.{l}.attn.hook_pattern"][rows, h, ds.pos["END"], ds.pos[src]].mean().item()

    heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)
             if att(l, h, "IO") > att(l, h, "S1") + att(l, h, "S2")]
    clean = metrics.logit_diff(model(ds.tokens), ds).mean().item()
    patched = path_patch_oracle_sweep(model, ds, abc, [[h] for h in heads], receivers="logits")
    return {hd: (clean - v) / abs(clean) for hd, v in zip(heads, patched.tolist())}


def test_the_steps_use_the_setups_thresholds(tmp_path, monkeypatch):
    """On ioi-tiny (which does the task), two Name Mover thresholds chosen so that the rule
    picks different heads; each setup's step finds what the rule by hand finds at its own."""
    monkeypatch.setenv(discovery.CACHE_ENV_VAR, str(tmp_path))
    model = tm.ioi_tiny()
    base = discovery.setup_defaults() | {"n_prompts": 24}
    probe = discovery.setup_from(model, base)
    assert probe.does_task
    drops = _name_mover_drops_by_hand(model, probe.ioi, probe.abc)
    top = max(drops.values())
    assert top > 0, drops  # some head that attends to IO carries it to the logits
    for t in (0.5 * top, 1.5 * top):  # the first selects at least that head, the second none
        setup = discovery.setup_from(model, base | {"name_mover_threshold": t})
        nm, _ = discovery.name_movers(setup)
        assert nm.heads == sorted(h for h, d in drops.items() if d >= t), t
        assert f"<= -{100 * t:g}% of the clean logit diff" in nm.rule


def test_no_chapter_has_a_task_criterion_of_its_own():
    """Chapters ask metrics.does_task (via Setup.does_task or directly), never a cut-off."""
    for path in CHAPTERS:
        code = code_of(path)
        assert not re.search(r"\[\"IO > S\"\]\s*[<>]=?\s*0\.\d", code), path.stem
        assert not re.search(r"F_M\s*[<>]=?\s*\d", code), path.stem
        assert not re.search(r"\.clean\s*>\s*0\b", code), path.stem
    assert metrics.TASK_MIN_IO_ABOVE_S == 0.6
