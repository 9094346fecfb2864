"""Headless Chromium driven over the DevTools protocol on a pipe, for the tests that open built
pages: ``--remote-debugging-pipe`` puts the protocol on file descriptors 3 (commands) and 4
(answers and events), NUL-separated JSON. The network is off (every host resolves to nothing).
One client, used by the console check (tests/test_book_render.py) and the interaction checks
(tests/test_static_interactivity.py)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path


class DevTools:
    """One headless Chromium with one page. :meth:`send` returns a command's answer; the events
    read meanwhile are kept in ``events`` (the domains enabled with ``enable`` send them)."""

    def __init__(self, executable: str, profile: Path, enable: tuple[str, ...] = (),
                 width: int | None = None, height: int = 1000) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def child() -> None:  # the protocol lives on fds 3 (commands) and 4 (answers, events)
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.closerange(5, 4096)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--remote-debugging-pipe", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"],
            close_fds=False, preexec_fn=child, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in enable:
            self.send(f"{domain}.enable", page=True)
        if width is not None:
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, page=True)

    def read(self, until: float) -> bool:
        """Read what Chromium wrote until the deadline; False once it passed."""
        left = until - time.monotonic()
        if left <= 0:
            return False
        if select.select([self._r], [], [], left)[0]:
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        return True

    def messages(self):
        """The complete messages read so far (each taken out of the buffer)."""
        while b"\0" in self._buf:
            raw, self._buf = self._buf.split(b"\0", 1)
            yield json.loads(raw)

    def send(self, method: str, params: dict | None = None, page: bool = False,
             timeout: float = 60) -> dict:
        """Send a command and return its answer; events read meanwhile go to ``events``."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for answer in self.messages():
                if answer.get("id") == self._id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer["result"]
                if "method" in answer:
                    self.events.append(answer)
            if not self.read(deadline):
                raise TimeoutError(f"Chromium did not answer {method} within {timeout}s")

    def js(self, expression: str):
        """Evaluate in the page (promises awaited) and return the value."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, page=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def navigate(self, page: Path) -> None:
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, page=True)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._w)
        os.close(self._r)
