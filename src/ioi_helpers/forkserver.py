"""Chapter kernels forked from one process that has already imported everything.

A chapter kernel started the usual way (``python -m ipykernel_launcher``) spends 8-10 s of
CPU importing torch, TransformerLens, altair and pandas, and 2-4 s more building its model
(ioi-planted, gpt2-random from the weights cache), before the chapter's first line runs: in
every chapter again (13-15 s of CPU per chapter on an idle 2-core machine,
``benchmarks/bench_startup.py``). The fork server pays
that once per pipeline run. It is a process (``python -m ioi_helpers.forkserver``) that imports
what chapters import (:data:`startup.WARM_UP`), builds the run's model and parks it in the
models' hand-over slot (:func:`models.prepare_handover`), and then forks one kernel per
chapter. A forked kernel starts with all of that already in its memory, in a fraction of a
second. Memory is copy-on-write: every kernel has its own copy of the model, so a chapter that
changes its model changes nothing for the next one.

What a fork needs, and how it is met here:

* OpenMP's thread pool does not survive a fork (a forked child's first parallel torch op
  hangs if the parent ever ran one with more than one thread). The server sets torch to one
  thread before any work and each kernel sets the usual count back, so the server never
  starts an OpenMP pool.
* CUDA must not be initialised before a fork. The server never touches CUDA, and the pipeline
  uses it only when the chapters run on the CPU (:func:`usable`); on CUDA kernels start the
  usual way.
* Hugging Face tokenizers warn (and turn their threads off) in a child forked after they used
  threads: the server sets ``TOKENIZERS_PARALLELISM=false`` for itself; kernels get the
  environment their kernel manager gives them, as a launched kernel would.
* A forked kernel is the server's child, not the pipeline's. The pipeline watches it through a
  Linux pidfd (:class:`ForkedProcess`), which also makes signals safe against a reused pid. So
  the server needs Linux (pidfd, kernel 5.3) and Python 3.9.

Everything else a kernel sees is what a launched one sees: its own session and process group
(interrupts and kills reach it and its subprocesses), the kernel manager's environment,
working directory and command line, and stdin from ``/dev/null``.

The pipeline's side: :class:`ForkServer` starts and talks to the server; :class:`ForkedKernelManager`
is a jupyter_client kernel manager whose kernels the server forks (:class:`ForkedProvisioner`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from typing import Any, Sequence

LAUNCHER = ("-m", "ipykernel_launcher")
READY_TIMEOUT_S = 600.0  # the server's warm-up: imports, then building (or reading) the model


class ForkServerError(RuntimeError):
    """The fork server could not start, died, or refused a kernel."""


def usable() -> str | None:
    """``None`` when kernels can be forked here, else why not (one line)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return "it needs Linux and Python's os.pidfd_open"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as err:  # a kernel older than 5.3, or a sandbox without the system call
        return f"pidfd_open is not available ({err})"
    from .models import default_device

    if default_device() != "cpu":
        return "chapters run on CUDA, which must not be initialised before a fork"
    return None


# ----------------------------------------------------------------------------- the pipeline's side


class ForkServer:
    """The fork server process and a connection to it.

    ``model_name``: the model the chapters load with ``models.load_model(model_name)``; the
    server builds it once (``None``: imports only). The server starts at once and warms up in
    the background; the first :meth:`launch` waits for it. :meth:`close` (or the end of this
    process) ends it; kernels it forked exit when it does.
    """

    def __init__(self, model_name: str | None = None):
        self.model_name = model_name
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", __name__, str(theirs.fileno())]
        if model_name is not None:
            argv += ["--model", str(model_name)]
        self.started = time.perf_counter()
        try:
            self.process = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._sock = ours
        self._file = ours.makefile("rwb")
        self.warm_up: dict | None = None  # what the server reported once ready (see serve)

    def _reply(self, timeout: float) -> dict:
        self._sock.settimeout(timeout)
        try:
            line = self._file.readline()
        except (OSError, TimeoutError) as err:
            raise ForkServerError(f"no answer from the fork server ({err})") from None
        if not line:
            code = self.process.poll()
            raise ForkServerError(f"the fork server exited (status {code})" if code is not None
                                  else "the fork server closed its connection")
        return json.loads(line)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict:
        """Block until the server has warmed up; its report: seconds spent on imports and on
        the model, its CPU time, and whether the model was parked."""
        if self.warm_up is None:
            self.warm_up = self._reply(timeout)
            self.warm_up["wall"] = time.perf_counter() - self.started
        return self.warm_up

    def launch(self, argv: Sequence[str], env: dict[str, str], cwd: str | os.PathLike) -> int:
        """Fork a kernel that runs ``argv`` (``python -m ipykernel_launcher ...``) with ``env``
        in ``cwd``; its pid."""
        self.wait_ready()
        request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd)}
        try:
            self._file.write(json.dumps(request).encode() + b"\n")
            self._file.flush()
        except OSError as err:
            raise ForkServerError(f"the fork server is gone ({err})") from None
        reply = self._reply(60.0)
        if "error" in reply:
            raise ForkServerError(reply["error"])
        return int(reply["pid"])

    def close(self) -> None:
        for closing in (self._file.close, self._sock.close):
            try:
                closing()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ForkedProcess:
    """What jupyter_client's provisioner needs of a ``Popen`` (poll, wait, signals), for a
    kernel that is the fork server's child. Watched through a pidfd, so a signal can never
    reach another process that reused the pid. The exit status of another process's child is
    not known here: ``returncode`` is 0 once it has exited (jupyter_client only asks whether
    the kernel is alive)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._fd: int | None = os.pidfd_open(pid)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None and self._fd is not None:
            poller = select.poll()  # (not select.select: it fails on descriptors past 1023)
            poller.register(self._fd, select.POLLIN)
            if poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
                self.returncode = 0
                os.close(self._fd)
                self._fd = None
            elif timeout is not None:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self._fd, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _provisioner_class():
    from jupyter_client.provisioning import LocalProvisioner

    class ForkedProvisioner(LocalProvisioner):
        """jupyter_client's local provisioner, except that the kernel process is forked by
        the fork server instead of launched."""

        fork_server: ForkServer

        async def launch_kernel(self, cmd: list[str], **kwargs: Any):
            cwd = kwargs.get("cwd") or os.getcwd()
            env = kwargs.get("env") or os.environ.copy()
            pid = self.fork_server.launch(cmd, env, cwd)
            self.process = ForkedProcess(pid)
            self.pid = self.pgid = pid  # the kernel leads its own session and process group
            self.cwd = cwd
            return self.connection_info

    return ForkedProvisioner


def kernel_manager(server: ForkServer, kernel_name: str):
    """An ``AsyncKernelManager`` for ``kernel_name`` whose kernels ``server`` forks."""
    from jupyter_client.manager import AsyncKernelManager

    provisioner_class = _provisioner_class()

    class ForkedKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw: Any):
            if self.provisioner is None:
                self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
                self.provisioner = provisioner_class(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec,
                                                     parent=self)
                self.provisioner.fork_server = server
            return await super()._async_pre_start_kernel(**kw)

    return ForkedKernelManager(kernel_name=kernel_name)


# ----------------------------------------------------------------------------- the server


def _warm_up(model_name: str | None) -> dict:
    """Import what chapters import and build the model (into the hand-over slot), on one torch
    thread and without touching CUDA."""
    started, cpu = time.perf_counter(), time.process_time()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP pool in the server: a forked child could not use it
    from . import startup

    exec(compile(startup.WARM_UP, "<fork server warm-up>", "exec"), {})
    import ipykernel.ipkernel  # noqa: F401 - the kernel itself, imported once here
    import ipykernel.kernelapp  # noqa: F401

    imported = time.perf_counter()
    parked = False
    if model_name is not None:
        from . import models

        parked = models.prepare_handover(model_name)
    return {"threads": threads, "imports_s": imported - started,
            "model_s": time.perf_counter() - imported, "cpu_s": time.process_time() - cpu,
            "model": model_name, "parked": parked}


def _kernel(request: dict, threads: int, disconnect) -> None:
    """In the forked child (already leading its own session, as jupyter_client launches
    kernels): become the kernel ``request`` asks for. ``disconnect`` closes the child's copy of
    the server's connection. Never returns."""
    code = 1
    try:
        for signum, handler in ((signal.SIGCHLD, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler),
                                (signal.SIGTERM, signal.SIG_DFL), (signal.SIGPIPE, signal.SIG_IGN)):
            signal.signal(signum, handler)
        disconnect()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(request["env"])
        # the kernel exits when its parent (this server) goes away: ipykernel's parent poller.
        # JPY_PARENT_PID alone does not reach it here (ipykernel read it into parent_handle's
        # default when the server imported it), so it is also passed on the command line below.
        server_pid = os.getppid()
        os.environ["JPY_PARENT_PID"] = str(server_pid)
        os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()  # as `python -m ipykernel_launcher` run in that folder
        import torch

        torch.set_num_threads(threads)
        argv = request["argv"]
        sys.argv = [ipykernel_launcher_path(), *argv[3:]]
        from ipykernel.kernelapp import IPKernelApp

        IPKernelApp.launch_instance(argv=[*argv[3:], f"--IPKernelApp.parent_handle={server_pid}"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - report, then leave: the server's loop must never run here
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def ipykernel_launcher_path() -> str:
    import ipykernel_launcher

    return ipykernel_launcher.__file__


def _check(argv: Sequence[str]) -> str | None:
    """Why the server cannot fork ``argv``, or None."""
    if len(argv) < 3 or tuple(argv[1:3]) != LAUNCHER:
        return f"not an ipykernel command line: {list(argv)[:3]}"
    if os.path.realpath(argv[0]) != os.path.realpath(sys.executable):
        return f"the kernel's interpreter {argv[0]} is not the fork server's {sys.executable}"
    return None


def serve(fd: int, model_name: str | None) -> None:
    """The server: warm up, report, then fork a kernel for every request until the
    connection closes."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pipeline decides; EOF ends the server
    sock = socket.socket(fileno=fd)
    stream = sock.makefile("rwb")

    def send(obj: dict) -> None:
        stream.write(json.dumps(obj).encode() + b"\n")
        stream.flush()

    report = _warm_up(model_name)
    threads = report["threads"]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # kernels are reaped by the system
    send(report)
    for line in stream:
        request = json.loads(line)
        why = _check(request.get("argv", []))
        if why is not None:
            send({"error": why})
            continue
        ready_r, ready_w = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns about forking with threads alive:
            warnings.simplefilter("ignore", DeprecationWarning)  # see the module's notes
            pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.setsid()  # its own session and process group, as jupyter_client launches kernels
            os.close(ready_w)  # the parent answers only once the session exists
            _kernel(request, threads, lambda: (stream.close(), sock.close()))
        os.close(ready_w)
        os.read(ready_r, 1)  # returns at the child's close (or exit)
        os.close(ready_r)
        send({"pid": pid})


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="The pipeline's fork server (started by it).")
    parser.add_argument("fd", type=int, help="the connection to the pipeline")
    parser.add_argument("--model", help="the model to build once and hand to every kernel")
    args = parser.parse_args(argv)
    serve(args.fd, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
