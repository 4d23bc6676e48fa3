"""The client kit's example app (clients/js/example: React, TanStack Query and @records/client) in a
real Chromium against real Daphne and Celery processes: a colleague's approval shows up live, a
Daphne restart is bridged without a gap (resumed from the list's watermark on, nothing replayed
twice), and a `resync_required` (the unit's stream reset: `epoch_changed`) makes it refetch.

The example is built from the kit's sources (`npm run build:example`) and served on the Daphne's own
origin by the browser (Playwright routes /kit-example/), as an SPA's host would serve it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from backend.accounts.models import Role
from tests.support.browser import WAIT_MS
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.signing import sign, signed, transition_now

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

KIT = Path(__file__).resolve().parents[3] / "clients" / "js"
EXAMPLE = KIT / "example"
# The example's page is served by the browser itself (a routed response has no address), which
# Chromium's local network access checks take for a public page and keep off 127.0.0.1; the page and
# the server share one origin all the same, as an SPA served by the API's host does.
CHROMIUM_EXTRA_ARGS = ["--disable-features=LocalNetworkAccessChecks"]


@pytest.fixture(scope="module")
def example_build():
    if not (KIT / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("clients/js has no node_modules: run `make kit-deps` (npm ci from the lockfile)", pytrace=False)
    result = subprocess.run(["npm", "run", "build:example"], cwd=KIT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return EXAMPLE


class Example:
    """One signed-in example page; `stats()` is the app's window.exampleStats."""

    def __init__(self, browser, port: int, username: str):
        self.context = browser.new_context()
        self.page = page = self.context.new_page()
        page.set_default_timeout(WAIT_MS)
        files = {
            "index.html": ("text/html", EXAMPLE / "index.html"),
            "dist/app.js": ("text/javascript", EXAMPLE / "dist" / "app.js"),
        }

        def serve(route):
            name = route.request.url.split("/kit-example/", 1)[1].split("?", 1)[0] or "index.html"
            content_type, path = files[name]
            route.fulfill(status=200, content_type=content_type, body=path.read_bytes())

        page.route(re.compile(rf"^http://127\.0\.0\.1:{port}/kit-example/.*"), serve)
        self.sockets: list[str] = []
        page.on("websocket", lambda socket: self.sockets.append(socket.url))
        page.goto(f"http://127.0.0.1:{port}/kit-example/?fast=1")
        page.get_by_test_id("username").fill(username)
        page.get_by_test_id("password").fill(PASSWORD)
        page.get_by_test_id("sign-in").click()
        self.logs: list[str] = []
        page.on("console", lambda message: self.logs.append(message.text))
        self.expect_live()
        page.evaluate("window.__sameDocument = 'marker'")

    def expect_live(self) -> None:
        try:
            expect(self.page.get_by_test_id("status")).to_have_attribute("data-status", "live", timeout=WAIT_MS)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\nstats: {self.stats()}\nconsole: {self.logs[-10:]}") from None

    def status_of(self, request):
        return self.page.get_by_test_id(f"status-{request.id}")

    def stats(self) -> dict:
        return self.page.evaluate("window.exampleStats")

    def close(self):
        self.context.close()


@pytest.fixture
def examples(browser):
    opened: list[Example] = []

    def open_example(port: int, username: str) -> Example:
        opened.append(Example(browser, port, username))
        return opened[-1]

    yield open_example
    for example in opened:
        example.close()


def staff(unit, *roles: str) -> dict:
    return {role: UserFactory(unit=unit, role=role) for role in roles}


def test_the_example_shows_a_colleagues_approval_live(console_daphne, worker, example_build, examples, api):
    # given a pending withdrawal, and a requester watching the example app's list
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    request = make_request("withdrawal", people[Role.REQUESTER], [CrateFactory(unit=unit)])
    example = examples(console_daphne.port, people[Role.REQUESTER].username)
    expect(example.status_of(request)).to_have_text("pending")
    # (the list was read once, and the socket joined the stream where that list was read)
    joined = example.sockets[0]
    assert "ticket=" in joined and "token=" not in joined and "last_seq=" in joined

    # when a colleague approves it over the API (a signed decision, run as a job on the Celery worker)
    response = api(people[Role.APPROVER]).post(
        f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"), format="json"
    )
    assert response.status_code == 202, response.content

    # then the example shows it approved, in the same document, without refetching everything
    expect(example.status_of(request)).to_have_text("approved", timeout=WAIT_MS)
    assert example.page.evaluate("window.__sameDocument") == "marker"
    stats = example.stats()
    assert stats["refetches"] == 0 and stats["updates"] >= 1


def test_the_example_resumes_after_a_daphne_restart_without_a_gap(console_daphne, example_build, examples):
    # given a live example with a pending withdrawal in its unit
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    crate, spare = CrateFactory(unit=unit), CrateFactory(unit=unit)
    request = make_request("withdrawal", people[Role.REQUESTER], [crate])
    example = examples(console_daphne.port, people[Role.REQUESTER].username)
    seq_before = example.stats()["lastSeq"]
    assert isinstance(seq_before, int)

    # when Daphne goes away, and meanwhile the request is approved and another one filed
    console_daphne.stop()
    expect(example.page.get_by_test_id("status")).to_have_attribute("data-status", "syncing")
    transition_now(
        entity="withdrawal", action="approve", actor=people[Role.APPROVER], request_id=request.id,
        signature_id=sign(people[Role.APPROVER], "withdrawal", "approve"),
    )
    filed = make_request("withdrawal", people[Role.REQUESTER], [spare])
    # and Daphne comes back on the same port
    console_daphne.start()

    # then the example is live again and shows both changes, in the same document
    example.expect_live()
    expect(example.status_of(request)).to_have_text("approved")
    expect(example.status_of(filed)).to_have_text("pending")
    assert example.page.evaluate("window.__sameDocument") == "marker"
    # because it resumed from the last seq it had and took each missed update once: the approval's
    # two (request, crate) and the new request's one, no resync
    resumed = [url for url in example.sockets[1:] if f"last_seq={seq_before}" in url]
    assert resumed, example.sockets
    stats = example.stats()
    assert stats["updates"] == 3 and stats["refetches"] == 0
    assert stats["lastSeq"] == seq_before + 3


def test_the_example_refetches_after_resync_required(console_daphne, example_build, examples):
    # given a live example with a pending withdrawal
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    request = make_request("withdrawal", people[Role.REQUESTER], [CrateFactory(unit=unit)])
    example = examples(console_daphne.port, people[Role.REQUESTER].username)
    expect(example.status_of(request)).to_have_text("pending")
    fetches = example.stats()["listFetches"]

    # when the unit's stream is reset under it (an outbox reset: a new epoch, seqs from 0 again)
    call_command("reset_streams", "--unit", unit.code, "--restart")

    # then the app hears one refetch and reads its list again, and stays live in the new epoch
    page = example.page
    page.wait_for_function("window.exampleStats.refetches === 1")
    page.wait_for_function(f"window.exampleStats.listFetches > {fetches}")
    transition_now(
        entity="withdrawal", action="approve", actor=people[Role.APPROVER], request_id=request.id,
        signature_id=sign(people[Role.APPROVER], "withdrawal", "approve"),
    )
    expect(example.status_of(request)).to_have_text("approved", timeout=WAIT_MS)
    assert example.page.evaluate("window.__sameDocument") == "marker"
