"""A real headless browser for tests of the status page: Debian's Chromium driven by Playwright.

Never downloads a browser: Playwright starts ``/usr/bin/chromium`` (Debian package ``chromium``, installed
by ``.ci/install-system-deps``) with the flags below and a fresh profile folder, so nothing of a previous run
(cache, cookies, service workers) is reused and the browser phones nowhere by itself (no component
updates, no sync, no QUIC, no background networking). Every request the page makes is recorded by
:class:`Browser` and any to an address outside loopback is aborted and reported in
:attr:`Browser.foreign`, so a test can assert that nothing left the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Route, async_playwright

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "Browser", "browser"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in CI containers; the page is our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--metrics-recording-only",
)


def _loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "about", "blob"):
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Browser:
    context: BrowserContext
    requests: list[str] = field(default_factory=list)
    """Every URL the browser asked for, in order."""
    foreign: list[str] = field(default_factory=list)
    """Requests to anything but loopback (aborted)."""


@contextlib.asynccontextmanager
async def browser(profile: Path, *, locale: str = "en-GB") -> AsyncIterator[Browser]:
    """Chromium with a fresh profile in ``profile``; ``locale`` sets its ``Accept-Language``."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_FLAGS),
            locale=locale,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        recorded = Browser(context)

        async def guard(route: Route) -> None:
            url = route.request.url
            recorded.requests.append(url)
            if _loopback(url):
                await route.continue_()
            else:
                recorded.foreign.append(url)
                await route.abort()

        await context.route("**/*", guard)
        try:
            yield recorded
        finally:
            await context.close()
