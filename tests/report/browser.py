"""Open a page in headless Chromium over the DevTools protocol on a pipe (no network, no extra
packages): collect console errors and exceptions, check every image, take a screenshot."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => "
    "({alt: i.alt, complete: i.complete, width: i.naturalWidth})))"
)
SECTIONS_JS = (
    "JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('section[id]'))"
    ".map(s => [s.id, s.getBoundingClientRect().height])))"
)


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What the browser saw: console errors, images (alt, loaded, width), the page height and
    each section's laid-out height by id."""

    errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    height: int = 0
    sections: dict[str, float] = field(default_factory=dict)


class _Pipe:
    """Chromium's --remote-debugging-pipe: JSON messages separated by NUL bytes on fds 3/4."""

    def __init__(self, binary: str, profile: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        os.set_inheritable(to_browser_r, True)
        os.set_inheritable(from_browser_w, True)
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
        ]

        def fds() -> None:  # in the child: the pipe ends on fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            args,
            preexec_fn=fds,
            close_fds=False,  # subprocess would close fds 3 and 4 after preexec_fn
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = next((e for e in self.events if e.get("method") == method), None)
        while seen is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            event = self._read()
            self.events.append(event)
            seen = event if event.get("method") == method else None
        return seen

    def _read(self, timeout: float = 60.0) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            if not ready:
                raise TimeoutError(f"Chromium sent nothing for {timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)


def check_page(page: Path, screenshot: Path, *, binary: str, width: int = 1280) -> PageCheck:
    """Load `page` (a file), wait for it, and report what a reader's browser would show."""
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.send("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            pipe.send("Page.navigate", session, url=page.resolve().as_uri())
            pipe.wait_for("Page.loadEventFired", timeout=60)
            images = pipe.send("Runtime.evaluate", session, expression=IMAGES_JS)
            sections = pipe.send("Runtime.evaluate", session, expression=SECTIONS_JS)
            height = pipe.send(
                "Runtime.evaluate", session, expression="document.documentElement.scrollHeight"
            )
            shot = pipe.send(
                "Page.captureScreenshot", session, format="png", captureBeyondViewport=True
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            check = PageCheck(
                images=json.loads(images["result"]["value"]),
                height=int(height["result"]["value"]),
                sections=json.loads(sections["result"]["value"]),
            )
            for event in pipe.events:
                params = event.get("params", {})
                if event.get("method") == "Runtime.exceptionThrown":
                    check.errors.append(str(params.get("exceptionDetails", {}).get("text")))
                elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error",
                    "assert",
                ):
                    check.errors.append(str(params.get("args")))
                elif event.get("method") == "Log.entryAdded":
                    entry = params.get("entry", {})
                    if entry.get("level") == "error":
                        check.errors.append(f"{entry.get('source')}: {entry.get('text')}")
            return check
        finally:
            pipe.close()
