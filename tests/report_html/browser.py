"""A real headless Chromium, driven over its DevTools protocol on a pipe (no websocket, no extra package).

``chromium --remote-debugging-pipe`` reads commands from file descriptor 3 and writes answers
and events to descriptor 4, each a JSON text ended by a NUL byte. :class:`Browser` opens a page,
collects what its console and log say (errors included: a blocked fetch, a missing file), runs
an expression in it and takes screenshots.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.timing import scaled

#: Names the binary has in Debian (chromium), elsewhere (chromium-browser) and Chrome's own.
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """The first Chromium found: ``$LLEM_CHROMIUM``, else one of :data:`BINARIES` on the PATH."""
    chosen = os.environ.get("LLEM_CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


def _high(fd: int) -> int:
    """``fd`` moved to a descriptor number of 10 or more (the original is closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """One headless Chromium process and one page in it."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        # The child's ends are moved above 9, so that putting them on 3 and 4 cannot overwrite one with the other.
        to_child, self._send = os.pipe()
        self._receive, from_child = os.pipe()
        to_child, from_child = (_high(fd) for fd in (to_child, from_child))
        args = [
            binary, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
            "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--disable-extensions",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        # bash (dash refuses descriptors above 9) puts the two ends on 3 and 4, where Chromium looks for them.
        wiring = f'exec "$@" 3<&{to_child} 4>&{from_child}'
        self._process = subprocess.Popen(
            ["bash", "-c", wiring, "bash", *args], pass_fds=(to_child, from_child),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def close(self) -> None:
        try:
            self._call("Browser.close", timeout=scaled(10))
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self._process.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._send, self._receive):
            try:
                os.close(fd)
            except OSError:
                pass

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._receive], [], [], left)
            if ready:
                chunk = os.read(self._receive, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the protocol pipe (exit status {self._process.poll()})")
                self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(text)
        return message

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
              timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._send, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + (timeout or scaled(60))
        while True:
            message = self._message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command to the page's session."""
        return self._call(method, params, self._session)

    def wait_for(self, method: str, timeout: float) -> dict[str, Any]:
        """The first event named ``method`` (already received, or the next ones)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            self.events.append(self._message(deadline))

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image decoded or failed by then)."""
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired", scaled(60))

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise RuntimeError(f"the page's script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def errors(self) -> list[str]:
        """What the console and the log reported as errors or warnings (failed loads, blocked fetches, exceptions)."""
        found: list[str] = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails"))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", params)["data"]))
