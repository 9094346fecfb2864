"""`python -m ioi_helpers.lab` (the README's command: JupyterLab, with a settings override
written into this environment) opens a chapter's .py as a notebook, widgets included.

A headless JupyterLab server started by that command on 127.0.0.1 (a free port, a random token, this repository as its
root) is asked, over its REST API, for a chapter: jupytext's contents manager must return it
as a notebook with the chapter's cells. The lab page must list the widgets' front-end
extension and jupytext's, and a .py must open in jupytext's notebook view by default.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jupytext
import pytest

from conftest import REPO

CHAPTER = "book/01_task.py"
WIDGETS = "@jupyter-widgets/jupyterlab-manager"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"),  # no user config: the environment's alone
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    cmd = [sys.executable, "-m", "ioi_helpers.lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
           f"--LabApp.user_settings_dir={tmp / 'settings'}"]
    from ioi_helpers import lab

    lab.overrides_file().unlink(missing_ok=True)  # the command itself must write it
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def get(path: str):
        req = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read().decode()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                get("/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"jupyter lab did not start:\n{(tmp / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield get
        # the token is required: without it the API refuses
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/api/contents/book", timeout=30)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_a_chapter_py_is_served_as_a_notebook_with_its_cells(server):
    model = server(f"/api/contents/{CHAPTER}?type=notebook&content=1")
    assert model["type"] == "notebook" and model["path"] == CHAPTER
    cells = model["content"]["cells"]
    expected = jupytext.read(REPO / CHAPTER).cells
    assert [c["cell_type"] for c in cells] == [c.cell_type for c in expected]
    assert [c["source"] for c in cells] == [c.source for c in expected]
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)


def test_the_lab_has_the_widgets_and_jupytext_front_ends_and_opens_py_as_notebooks(server):
    page = server("/lab")
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page, re.S).group(1))
    extensions = {e["name"] for e in config.get("federated_extensions", [])}
    assert {WIDGETS, "jupyterlab-jupytext"} <= extensions
    docmanager = server("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    viewers = docmanager["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers.get("python") == "Jupytext Notebook"  # a double-click opens a .py as a notebook
    from ioi_helpers import lab

    assert lab.overrides_file().is_file()  # written into this environment by the command
