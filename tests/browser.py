"""A real browser for UI checks: headless Chromium driven by ChromeDriver over the W3C WebDriver
protocol (plain JSON over HTTP, no client library). Used by the UI tests and by
``scripts/screenshots.py``; needs Debian's ``chromium`` and ``chromium-driver``."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def available() -> str | None:
    """Why no browser can run here, or None when one can."""
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (Debian: apt install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium with a fresh profile: a page shows what its URL alone asks for."""

    def __init__(self, width: int = 1600, height: int = 1100):
        self.port = _free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="gdexp-browser-"))
        self.driver = subprocess.Popen(
            ["chromedriver", f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromedriver did not start in 30 s")
            time.sleep(0.2)
        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
        ]
        options = {"args": args, "binary": shutil.which("chromium")}
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return json.loads(reply.read())["value"]
        except urllib.error.HTTPError as err:  # WebDriver says what went wrong in its body
            try:
                message = json.loads(err.read())["value"]["message"].splitlines()[0]
            except (ValueError, KeyError, TypeError):
                message = str(err)
            raise RuntimeError(f"WebDriver {method} {path}: {message}") from None

    def _session(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def text(self) -> str:
        """What the page shows, as text."""
        return self.script("return document.body ? document.body.innerText : '';")

    def wait_for(self, *needles: str, timeout: float = 90) -> str:
        """The page's text once every needle is in it; a TimeoutError naming what is missing."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise TimeoutError(f"not on the page after {timeout:.0f} s: {missing}; it shows: {text[:1500]!r}")

    def wait_until(self, source: str, timeout: float = 90) -> None:
        """Until the script ``source`` returns something truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.script(source):
                return
            time.sleep(0.5)
        raise TimeoutError(f"still false after {timeout:.0f} s: {source}")

    def click(self, css: str) -> bool:
        """Click the first element matching ``css``; whether there was one."""
        return bool(self.script("const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;", css))

    def resize(self, width: int, height: int) -> None:
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def type(self, css: str, text: str) -> None:
        """Type ``text`` into the first element matching ``css``, as a user's keys would."""
        found = self._session("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))
        self._session("POST", f"/element/{element}/value", {"text": text})

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._session("DELETE", "")
        except OSError:
            pass
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
