"""What the dashboard's tests share: the optional packages (skipped here with a
reason, failing under CI=true), a dashboard served on a free loopback port in
the test's own event loop, and a browser."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

import backbone
from conftest import IN_CI

TOKEN = "test-token-0123456789abcdef"
"""The action token of the tests' dashboards."""


def need(module: str, install: str) -> Any:
    """MODULE imported; without it the test is skipped (failed under CI=true)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        reason = f"{module} is not installed: {install}"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def chromium() -> str:
    """The path of Debian's chromium; skipped without it (failed under CI=true)."""
    need("playwright.async_api", "pip install playwright (the dev extra has it)")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "no chromium binary for the browser tests: apt-get install chromium"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


@dataclasses.dataclass
class Served:
    """A dashboard being served: its address, app and monitor."""

    url: str
    port: int
    dashboard: Any

    @property
    def monitor(self) -> Any:
        return self.dashboard.monitor


@contextlib.asynccontextmanager
async def serving(
    bus: backbone.Backbone,
    *,
    actions: bool = False,
    token: str | None = TOKEN,
    interval: float = 0.2,
) -> AsyncIterator[Served]:
    """BUS's dashboard served by uvicorn on a free loopback port, in a task of
    the running loop (so the test's own Redis calls and the page's share it)."""
    need("starlette", "pip install 'backbone[ui]'")
    from backbone.ui.app import Dashboard
    from backbone.ui.auth import Guard
    from backbone.ui.monitor import Monitor
    from backbone.ui.server import listen, server_for

    listener = listen("127.0.0.1", 0)
    port = int(listener.getsockname()[1])
    guard = Guard(
        host="127.0.0.1", port=port, actions=actions, token=token if actions else None
    )
    dashboard = Dashboard(bus, Monitor(bus, interval=interval, rescan=interval), guard)
    server = server_for(dashboard.app, signals=False)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield Served(f"http://127.0.0.1:{port}/", port, dashboard)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        listener.close()


@contextlib.asynccontextmanager
async def browser_page(executable: str) -> AsyncIterator[Any]:
    """A fresh page of a headless chromium; a script error on the page fails
    the test when the block ends."""
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
        finally:
            await browser.close()
    assert not errors, f"script errors on the page: {errors}"
