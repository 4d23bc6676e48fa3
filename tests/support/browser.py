"""Helpers of the browser tests (tests/realtime/console): Debian's Chromium, signed-in console pages
with their screenshots, and a Daphne a test may restart."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bench.processes import ARTIFACTS, start_daphne
from tests.support.factories import PASSWORD

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ARTIFACTS / "screenshots"
# Timings for the console under test: reconnect quickly (the production defaults back off to 30 s),
# and keep trying for as long as a Daphne restart takes on a loaded machine (~40 s at 1.5 s apart;
# the production default is 10 attempts over ~4 minutes).
CONSOLE_OPTIONS = {"client": {"baseDelayMs": 250, "maxDelayMs": 1500, "maxAttempts": 30}}
WAIT_MS = 20_000  # the machine is slow and shared: generous, never asserted on


class Consoles:
    """Signed-in console pages for one test; screenshots of all of them if the test fails."""

    def __init__(self, browser, request):
        self.browser = browser
        self.request = request
        self.pages: list = []
        self.contexts: list = []
        self.navigations: dict[int, int] = {}
        self.socket_urls: dict[int, list[str]] = {}

    def open(self, port: int, username: str, *, options: dict | None = None):
        from playwright.sync_api import expect

        context = self.browser.new_context(viewport={"width": 1440, "height": 1000})
        context.add_init_script(f"window.CONSOLE_OPTIONS = {json.dumps(options or CONSOLE_OPTIONS)};")
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        self.pages.append(page)
        # Every document load of the main frame is counted: a reload would show up here.
        self.navigations[id(page)] = 0
        page.on("load", lambda: self.navigations.__setitem__(id(page), self.navigations[id(page)] + 1))
        self.socket_urls[id(page)] = urls = []
        page.on("websocket", lambda socket: urls.append(socket.url))
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_test_id("login-username").fill(username)
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "live", timeout=WAIT_MS)
        for name in ("requests", "crates"):
            expect(page.get_by_test_id(f"{name}-body")).to_have_attribute("data-loaded", re.compile(r"\d+"))
        # A marker only a reload could lose.
        page.evaluate("window.__sameDocument = 'marker'")
        return page

    def loads(self, page) -> int:
        return self.navigations[id(page)]

    def sockets(self, page) -> list[dict[str, str]]:
        """The query of every WebSocket the page opened, in order."""
        return [dict(parse_qsl(urlsplit(url).query)) for url in self.socket_urls[id(page)]]

    def shot(self, page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        test = re.sub(r"[^\w.-]+", "_", self.request.node.name)
        path = SCREENSHOTS / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        failed = getattr(self.request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for index, page in enumerate(self.pages):
                try:
                    self.shot(page, f"failure-{index}")
                except Exception:  # noqa: BLE001 - a page that died cannot be photographed
                    pass
        for context in self.contexts:
            context.close()


class RestartableDaphne:
    """A Daphne of this module's own (the session one must never be stopped), restartable on the
    same port so a connected page can find it again."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc, self.port = start_daphne(env)

    def stop(self) -> None:
        self.proc.stop()

    def start(self) -> None:
        self.proc, _ = start_daphne(self.env, port=self.port)

    def ensure_running(self) -> None:
        if not self.proc.alive:
            self.start()
