"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (no websocket, no port).

Chromium reads NUL-terminated JSON commands from its file descriptor 3 and writes
responses and events to descriptor 4. ``Browser`` starts headless Chromium with
those two pipes, opens one page target and attaches to it in flat session mode;
``Page`` navigates, waits for the load event and records every console error,
uncaught exception, failed request and error log entry while it does.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--remote-debugging-pipe",
    "--window-size=1280,900",
)
TIMEOUT = 30.0  # seconds for any one command or page load


def high_fd(fd: int) -> int:
    """``fd`` moved to a close-on-exec descriptor >= 10, clear of the 3 and 4 the child needs."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """Headless Chromium driven over pipes; use as a context manager."""

    def __init__(self, profile: Path, stderr: Path, executable: Path = CHROMIUM) -> None:
        to_child, self._write = map(high_fd, os.pipe())  # we write commands -> the child's fd 3
        self._read, from_child = map(high_fd, os.pipe())  # the child's fd 4 -> we read
        self._stderr = open(stderr, "wb")  # noqa: SIM115 - Chromium's logs (D-Bus warnings...), closed by close()

        def child_pipes() -> None:  # in the child, before exec: dup2 makes 3 and 4 inheritable
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        # close_fds=False: subprocess would close 3 and 4 after preexec_fn, and pass_fds=(3, 4) needs them open
        # in this process already. Every other descriptor Python opened is close-on-exec anyway.
        self.process = subprocess.Popen(
            [str(executable), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            close_fds=False,
            preexec_fn=child_pipes,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self.receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def receive(self, deadline: float) -> dict:
        """The next message; ``TimeoutError`` after ``deadline``, ``EOFError`` when Chromium has gone."""
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium exited with {self.process.poll()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def wait_for(self, method: str, session: str) -> dict:
        """Wait for event ``method`` of ``session`` (events before it go to ``events`` too)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            event = self.receive(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        return Page(self, session)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.send("Browser.close")
                self.process.wait(10)
        except (OSError, TimeoutError, EOFError, RuntimeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._read)
            os.close(self._write)
            self._stderr.close()


class Page:
    """One tab: ``load`` a URL and get the problems seen while loading it."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def load(self, url: str) -> list[str]:
        """Navigate to ``url``, wait for its load event; return every error seen meanwhile (empty: clean)."""
        self.browser.events.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            return [f"{url}: navigation failed: {result['errorText']}"]
        self.browser.wait_for("Page.loadEventFired", self.session)
        return [f"{url}: {problem}" for problem in map(problem_of, self.browser.events) if problem]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def problem_of(event: dict) -> str | None:
    """The error an event reports, if any: console errors, exceptions, failed loads, error log entries."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console error: " + " ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"])
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return f"uncaught exception: {details.get('exception', {}).get('description', details.get('text'))}"
    if method == "Network.loadingFailed" and not params.get("canceled"):
        return f"request failed: {params.get('errorText')} ({params.get('type')})"
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        entry = params["entry"]
        return f"log error: {entry['text']} {entry.get('url', '')}".strip()
    return None
