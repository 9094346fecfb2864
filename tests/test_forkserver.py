"""Kernels forked from the pipeline's fork server (ioi_helpers.forkserver) behave like launched ones."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ioi_helpers import forkserver, pipeline

needs_fork = pytest.mark.skipif(forkserver.usable() is not None, reason=f"no fork server here: {forkserver.usable()}")

PROBE = """
import json, os, signal, sys, torch
from ioi_helpers import models
from ipykernel.kernelapp import IPKernelApp
a = torch.randn(1500, 1500)
for _ in range(3):
    (a @ a).sum()  # OpenMP on every thread: hangs in a child forked after the parent used a pool
torch.exp(torch.randn(5_000_000)).sum()
slot = models._HANDOVER
print(json.dumps({
    "cwd": os.getcwd(), "path0": sys.path[0], "marker": os.environ.get("IOI_FORK_TEST"),
    "threads": torch.get_num_threads(), "sid": os.getsid(0), "pid": os.getpid(), "ppid": os.getppid(),
    "stdin": os.path.realpath("/proc/self/fd/0"), "imported": "transformer_lens.model_bridge" in sys.modules,
    "slot": None if slot is None else [slot["request"][0], slot["pid"]],
    "handler": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
    "polls": getattr(getattr(IPKernelApp.instance(), "poller", None), "parent_pid", None),
}))
"""


def run(kc, code: str, timeout: float = 60) -> list[dict]:
    """Execute ``code``; its stream and error messages."""
    seen = []
    kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: seen.append(m)
                           if m["msg_type"] in ("stream", "error") else None)
    return seen


@needs_fork
def test_a_forked_kernel_is_a_kernel_like_a_launched_one(tmp_path, monkeypatch):
    import json

    import torch
    from jupyter_core.utils import run_sync

    monkeypatch.setenv("IOI_FORK_TEST", "from the kernel manager")
    server = forkserver.ForkServer("ioi-tiny")  # a model with GPT-2's vocabulary: big enough to use threads
    try:
        report = server.wait_ready()
        assert report["parked"] and report["model"] == "ioi-tiny"
        assert report["threads"] == torch.get_num_threads()  # the count kernels get back
        monkeypatch.delenv("IOI_FORK_TEST")  # the kernel's environment is the manager's, at launch
        monkeypatch.setenv("IOI_FORK_TEST", "at launch")
        pids = []
        for k in range(2):  # a second kernel from the same server is as fresh as the first
            km = forkserver.kernel_manager(server, pipeline.ensure_kernel())
            run_sync(km.start_kernel)(cwd=str(tmp_path))
            kc = km.blocking_client()
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=60)
                out = run(kc, PROBE)
                assert [m["msg_type"] for m in out] == ["stream"], out
                seen = json.loads(out[0]["content"]["text"])
                pids.append(seen["pid"])
                assert seen["cwd"] == seen["path0"] == str(tmp_path.resolve())
                assert seen["marker"] == "at launch"
                assert seen["threads"] == torch.get_num_threads()
                assert seen["sid"] == seen["pid"] == km.provisioner.pid  # its own session, as launched
                assert seen["ppid"] == server.process.pid
                assert seen["polls"] == server.process.pid  # it exits when the server does
                assert seen["stdin"] == "/dev/null" and seen["handler"]
                assert seen["imported"]  # the server's imports came with the fork
                assert seen["slot"] == ["ioi-tiny", server.process.pid]  # and the model it built

                # an interrupt reaches the kernel (jupyter_client signals its process group)
                kc.execute("import time; time.sleep(60)")
                time.sleep(1)
                start = time.perf_counter()
                run_sync(km.interrupt_kernel)()
                while True:
                    msg = kc.get_iopub_msg(timeout=20)
                    if msg["msg_type"] == "error":
                        break
                assert msg["content"]["ename"] == "KeyboardInterrupt"
                assert time.perf_counter() - start < 10
            finally:
                kc.stop_channels()
                run_sync(km.shutdown_kernel)(now=True)
            assert not run_sync(km.is_alive)()
            with pytest.raises(ProcessLookupError):
                os.kill(seen["pid"], 0)
        assert pids[0] != pids[1]
    finally:
        server.close()
    assert server.process.returncode == 0  # the server ends when the pipeline closes the connection


@needs_fork
def test_the_server_refuses_what_it_cannot_fork_and_dies_loudly():
    server = forkserver.ForkServer()
    try:
        with pytest.raises(forkserver.ForkServerError, match="not an ipykernel command line"):
            server.launch(["/bin/sh", "-c", "true"], dict(os.environ), "/")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        with pytest.raises(forkserver.ForkServerError, match="gone|exited|closed"):
            server.launch(pipeline_argv(), dict(os.environ), "/")
    finally:
        server.close()


def pipeline_argv() -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().get_kernel_spec(pipeline.ensure_kernel()).argv


@needs_fork
def test_the_pipeline_falls_back_to_launched_kernels_when_the_server_fails(tmp_path, monkeypatch, capsys):
    # a server that exits at once: every fork request fails
    class Broken(forkserver.ForkServer):
        def __init__(self, model_name=None):
            super().__init__(model_name)
            self.process.kill()
            self.process.wait()

    monkeypatch.setattr(forkserver, "ForkServer", Broken)
    path = tmp_path / "01_a.py"
    path.write_text('# %% tags=["parameters"]\nmodel_name = None\n\n# %%\nprint(1 + 1)\n')
    kernels = pipeline.Kernels([path], {path: {}})
    try:
        kernel = kernels.take(0)
        assert kernel is not None and kernels.server is None
        assert "the fork server failed" in capsys.readouterr().err
        assert "not forked: the fork server failed" in kernels.describe()
        kernel.shutdown()
    finally:
        kernels.close()


def test_chapters_on_cuda_get_launched_kernels(tmp_path, monkeypatch):
    # CUDA must not be initialised before a fork: the pipeline does not fork for CUDA runs
    monkeypatch.setenv("IOI_DEVICE", "cuda")
    assert "CUDA" in forkserver.usable()
    path = tmp_path / "01_a.py"
    path.write_text('# %% tags=["parameters"]\nmodel_name = None\n\n# %%\nprint(1 + 1)\n')
    kernels = pipeline.Kernels([path], {path: {}})
    try:
        assert kernels.server is None and "not forked" in kernels.describe()
        assert kernels.take(0) is None  # the first chapter: papermill's own kernel
    finally:
        kernels.close()


ORPHAN = """
import sys, time
from jupyter_core.utils import run_sync
from ioi_helpers import forkserver, pipeline
server = forkserver.ForkServer()
km = forkserver.kernel_manager(server, pipeline.ensure_kernel())
run_sync(km.start_kernel)()
print(server.process.pid, km.provisioner.pid, flush=True)
time.sleep(600)
"""


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True  # a zombie has exited
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False


@needs_fork
def test_killing_the_pipeline_leaves_no_server_or_kernel_behind():
    """A pipeline killed outright (SIGKILL: no clean-up runs) takes its fork server and the
    kernels forked from it along: none is left running as an orphan."""
    import subprocess
    import sys

    pipe = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    try:
        server_pid, kernel_pid = map(int, pipe.stdout.readline().split())
        os.kill(pipe.pid, signal.SIGKILL)
        pipe.wait()
        assert gone(server_pid, 15), "the fork server outlived its pipeline"
        assert gone(kernel_pid, 15), "a forked kernel outlived its fork server"
    finally:
        pipe.kill()
        for pid in locals().get("server_pid", None), locals().get("kernel_pid", None):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
