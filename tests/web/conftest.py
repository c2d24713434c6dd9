"""Browser fixtures: the system Chromium driven by Playwright, and a real API process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import need_program
from tests.support import VENV_BIN, free_port, process, wait_http

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module (never downloaded: the system one).

    Not per session: Playwright's sync API keeps an event loop running in the main thread
    while it is started, and any later test file on the same pytest-xdist worker that calls
    ``asyncio.run`` would find that loop."""
    need_program("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageProblems:
    """Console errors, uncaught exceptions and failed requests seen by a page."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests


@pytest.fixture
def browser_page(chromium):
    """A fresh page (own context, so sessionStorage starts empty) that records problems."""
    context = chromium.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    problems = PageProblems()
    page.on("console", lambda m: problems.console_errors.append(m.text)
            if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.page_errors.append(str(exc)))
    page.on("requestfailed", lambda r: problems.failed_requests.append(f"{r.method} {r.url}"))
    page.set_default_timeout(20_000)
    try:
        yield page, problems
    finally:
        context.close()


@dataclass
class LiveServer:
    url: str
    log: callable


@pytest.fixture
def live_server(service_env, tmp_path) -> Iterator[LiveServer]:
    """``collapsewatch api`` in its own process, on the test database."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(VENV_BIN / "collapsewatch"), "api", "--host", "127.0.0.1", "--port", str(port)]
    with process(args, tmp_path / "api.log", env=service_env) as proc:
        wait_http(f"{url}/healthz", timeout=60, proc=proc.popen)
        yield LiveServer(url=url, log=proc.log)
