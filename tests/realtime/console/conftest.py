"""Browser tests: Playwright for Python driving Debian's Chromium (never a downloaded browser build;
`scripts/ensure-browser` installs it) against real Daphne and Celery processes. Helpers: tests/support/browser.py.

One browser per module; each test opens the contexts it needs (one per signed-in user) and closes
them. Screenshots land in test-artifacts/screenshots/: the ones a test takes, and one of every open
page when a test fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, Consoles, RestartableDaphne


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def browser(request):
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make browser-deps` (scripts/ensure-browser installs "
            "Debian's chromium) or set CHROMIUM_PATH. The browser tests never download a browser.",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)

    # Playwright's sync API keeps an asyncio loop marked as running in this thread (inside a greenlet),
    # which Django's async-safety guard mistakes for async code calling the ORM. The tests' own ORM
    # calls are plain synchronous code, so the guard is lifted for the browser modules only.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # A module may ask for more switches (CHROMIUM_EXTRA_ARGS: test_kit_example.py).
        extra = list(getattr(request.module, "CHROMIUM_EXTRA_ARGS", []))
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + extra)
        yield browser
        browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def consoles(browser, request):
    session = Consoles(browser, request)
    yield session
    session.close()


@pytest.fixture(scope="module")
def console_daphne(live_env):
    server = RestartableDaphne(live_env)
    yield server
    server.stop()
