"""`pip install .` alone gives a working package: pyproject.toml declares what it imports.

* Fast: every third-party module the package imports belongs to a declared dependency, and
  every declared range admits the version locked in requirements.txt.
* Slow (run by .ci/run): a fresh virtual environment, ``pip install`` of a copy of
  pyproject.toml, README.md and src/ only (no requirements.txt), then every module imported
  from the installed copy. torch is constrained to the locked version so pip takes the CPU
  build (PyPI's default torch is the multi-GB CUDA build); the constraint picks a build and
  adds nothing: which packages are installed is pyproject.toml's decision alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO, imported_top_level

PACKAGE = REPO / "src" / "ioi_helpers"


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#;]+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def imported_top_level_modules() -> set[str]:
    return imported_top_level(PACKAGE) - set(sys.stdlib_module_names) - {"ioi_helpers", "__future__"}


def test_every_imported_module_is_a_declared_dependency():
    dists = packages_distributions()
    deps = declared()
    missing = {}
    for module in sorted(imported_top_level_modules()):
        providers = {canonicalize_name(d) for d in dists.get(module, [])}
        assert providers, f"{module} is imported but not installed here"
        if not providers & deps.keys():
            missing[module] = sorted(providers)
    assert not missing, f"imported by ioi_helpers but not in pyproject.toml's dependencies: {missing}"


def test_declared_ranges_admit_the_locked_versions():
    pins = locked()
    assert pins["torch"] == "2.13.0"
    for name, req in declared().items():
        assert name in pins, f"{name} is a dependency but requirements.txt does not lock it"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.txt locks {name}=={pins[name]}, outside pyproject's {req}"


@pytest.mark.slow
def test_pip_install_from_pyproject_alone_imports_every_module(tmp_path):
    src = tmp_path / "project"
    shutil.copytree(PACKAGE, src / "src" / "ioi_helpers",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    (tmp_path / "constraints.txt").write_text(f"torch=={locked()['torch']}\n")
    proc = subprocess.run([python, "-m", "pip", "install", "--quiet", "-c", str(tmp_path / "constraints.txt"),
                           str(src)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    code = ("import importlib, ioi_helpers, sys\n"
            f"for m in {modules!r}: importlib.import_module('ioi_helpers.' + m)\n"
            "print(ioi_helpers.__file__)")
    proc = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()).is_relative_to(venv)  # the installed copy, not this checkout
