"""What the README and .ci/run claim about installation and CI holds: every third-party module
the package and its tests import is pinned in requirements.txt, and CI starts from an empty
discovery cache."""

from __future__ import annotations

import re
import sys
from importlib.metadata import packages_distributions

from conftest import REPO, imported_top_level


def pinned() -> set[str]:
    names = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==", line.strip())
        if m:
            names.add(m.group(1).lower().replace("_", "-"))
    return names


def test_every_imported_distribution_is_pinned():
    dists = packages_distributions()
    local = {"ioi_helpers", "tiny_models", "oracles", "conftest"} | {p.stem for p in (REPO / "tests").glob("*.py")}
    missing = {}
    for mod in imported_top_level(REPO / "src" / "ioi_helpers") | imported_top_level(REPO / "tests"):
        if mod in sys.stdlib_module_names or mod in local or mod.startswith("_"):
            continue
        for dist in dists.get(mod, [mod]):
            if dist.lower().replace("_", "-") not in pinned():
                missing[mod] = dist
    assert not missing, f"imported but not pinned in requirements.txt (module: distribution): {missing}"


def test_ci_starts_from_an_empty_cache_and_says_what_it_deselects():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r'export IOI_CACHE_DIR="\$work/cache"', ci) and 'work="$(mktemp -d)"' in ci
    assert "all tests included" not in ci and "slow" in ci


def test_the_front_page_lists_every_model_and_the_readmes_offline_command():
    """book/intro.md's model table has a row for GPT-2 small and for every offline model
    ``load_model`` accepts, and its offline command is one the README gives."""
    from ioi_helpers import models

    intro = (REPO / "book" / "intro.md").read_text()
    rows = set(re.findall(r"^\| `([\w-]+)` \|", intro, flags=re.M))
    assert rows == {"gpt2", *models.OFFLINE_MODELS}, rows
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^(IOI_MODEL=[\w-]+ python -m ioi_helpers\.pipeline)", intro, flags=re.M)
    assert commands and all(c in readme for c in commands), commands
