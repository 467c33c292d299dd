"""``backbone ui`` in a real browser: Playwright drives Debian's chromium on the
dashboard, served by uvicorn on a free loopback port in the test's event loop,
against the test's real Redis. Without playwright or chromium these tests are
skipped with the reason (under CI=true they fail)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

import backbone
from backbone.deadletters import DeadLetters
from backbone.inspection import inspect_streams
from conftest import eventually
from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import subscribe_shipment_tracking
from helpers import moment
from test_dlq_cli import URI, dead_letter
from ui_helpers import TOKEN, browser_page, chromium, serving

pytestmark = pytest.mark.real_only

WAIT_MS = 15_000
"""How long the page may take to show a change (it polls every 0.2 s here)."""


def expect(locator: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(locator)


class Billing:
    """Handles packing events; fails those of FAILING product ids."""

    def __init__(self) -> None:
        self.failing: set[int] = set()
        self.handled: list[backbone.EventContext] = []

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        if product_id in self.failing:
            raise RuntimeError(f"card declined for product {product_id}")
        self.handled.append(context)

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        pass


async def publish(bus: backbone.Backbone, *product_ids: int) -> list[str]:
    from contracts.shipment_tracking_gen import shipment_tracking_producer

    producer = shipment_tracking_producer(bus, URI)
    return [
        (await producer.packing(f"u{n}@example.com", n, moment())).id
        for n in product_ids
    ]


def cell(page: Any, table: str, row: str, field: str) -> Any:
    return page.locator(f'#{table} tr[{row}] [data-field="{field}"]')


async def test_the_page_shows_the_figures_redis_holds_and_follows_them_live(
    real_bus: backbone.Backbone,
) -> None:
    executable = chromium()
    keys = real_bus.keys(URI)
    billing = Billing()
    async with subscribe_shipment_tracking(
        real_bus,
        URI,
        billing,
        group="billing",
        partial=True,
        start=backbone.StartFrom.BEGINNING,
    ):
        await publish(real_bus, 1, 2, 3, 4, 5)
        await eventually(lambda: len(billing.handled) == 5, message="5 handled")
        # audit: one member read two events and holds them (pending), the
        # three others are not delivered yet (lag).
        await real_bus.redis.xgroup_create(keys.stream, "audit", id="0")
        await real_bus.redis.xreadgroup("audit", "audit-1", {keys.stream: ">"}, count=2)
        async with serving(real_bus) as served, browser_page(executable) as page:
            await page.goto(served.url)
            stream = f'data-stream="{URI}"'
            await expect(cell(page, "streams", stream, "length")).to_have_text("5")
            billing_row = 'data-group="billing"'
            audit_row = 'data-group="audit"'
            await expect(cell(page, "groups", billing_row, "lag")).to_have_text("0")
            await expect(cell(page, "groups", billing_row, "pending")).to_have_text("0")
            await expect(cell(page, "groups", audit_row, "lag")).to_have_text("3")
            await expect(cell(page, "groups", audit_row, "pending")).to_have_text("2")
            await expect(cell(page, "groups", audit_row, "oldest")).not_to_have_text(
                "-"
            )

            # Live, without reloading: three more published and consumed.
            newest = (await publish(real_bus, 6, 7, 8))[-1]
            await eventually(lambda: len(billing.handled) == 8, message="8 handled")
            await expect(cell(page, "streams", stream, "length")).to_have_text("8")
            await expect(cell(page, "groups", billing_row, "lag")).to_have_text("0")
            await expect(cell(page, "groups", audit_row, "lag")).to_have_text("6")
            await expect(cell(page, "groups", audit_row, "pending")).to_have_text("2")
            await expect(page.locator(f'#tail li[data-id="{newest}"]')).to_contain_text(
                "packing"
            )
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "live"
            )

            (info,) = await inspect_streams(real_bus)
            groups = {group.name: group for group in info.groups}
            shown = {
                "length": await cell(page, "streams", stream, "length").inner_text(),
                "audit lag": await cell(page, "groups", audit_row, "lag").inner_text(),
                "audit pending": await cell(
                    page, "groups", audit_row, "pending"
                ).inner_text(),
            }
            assert shown == {
                "length": str(info.length),
                "audit lag": str(groups["audit"].lag),
                "audit pending": str(groups["audit"].pending),
            }
            assert await page.locator("#chart-rate polyline").count() >= 1


async def test_a_dead_letter_redriven_from_the_page_is_handled_by_its_group(
    real_bus: backbone.Backbone,
) -> None:
    executable = chromium()
    billing = Billing()
    billing.failing.add(13)
    options = backbone.SubscriptionOptions(retry=backbone.RetryPolicy(max_deliveries=1))
    async with subscribe_shipment_tracking(
        real_bus,
        URI,
        billing,
        group="billing",
        partial=True,
        start=backbone.StartFrom.BEGINNING,
        options=options,
    ):
        (event_id,) = await publish(real_bus, 13)
        letters = DeadLetters(real_bus, URI)

        async def dead_lettered() -> bool:
            return await letters.count() == 1

        await eventually(dead_lettered, message="the event to be dead-lettered")
        (letter,) = await letters.list()
        billing.failing.clear()  # the card works now
        async with (
            serving(real_bus, actions=True) as served,
            browser_page(executable) as page,
        ):
            await page.goto(f"{served.url}#token={TOKEN}")
            card = page.locator(f'.letter[data-letter="{letter.id}"]')
            await expect(card).to_contain_text("handler-error")
            await expect(card.locator(".payload")).to_contain_text("u13@example.com")
            await card.locator('[data-action="redrive"]').click()
            await expect(page.locator("#confirm")).to_be_visible()
            await expect(page.locator("#confirm-text")).to_contain_text(letter.id)
            await page.locator("#confirm-ok").click()
            await expect(page.locator("#toast")).to_contain_text("re-driven: 1 of 1")

            def handled_again() -> bool:
                return any(
                    context.original_id is not None
                    and context.original_id.id == event_id
                    for context in billing.handled
                )

            await eventually(handled_again, message="the re-driven event handled")
            await expect(card).to_have_count(0)
            await expect(page.locator("#letters-count")).to_have_text("(0)")
            assert await letters.count() == 0


async def test_an_action_without_the_right_token_or_from_another_site_is_refused(
    real_bus: backbone.Backbone,
) -> None:
    executable = chromium()
    _, dlq_id = await dead_letter(real_bus, "billing")
    letters = DeadLetters(real_bus, URI)
    async with (
        serving(real_bus, actions=True) as served,
        browser_page(executable) as page,
    ):
        await page.goto(served.url)  # no token in the address
        await expect(page.locator("#token-box")).to_be_visible()
        card = page.locator(f'.letter[data-letter="{dlq_id}"]')
        purge = card.locator('[data-action="purge"]')

        await purge.click()  # cancelled: nothing is sent
        await expect(page.locator("#confirm")).to_be_visible()
        await page.locator("#confirm-cancel").click()
        await expect(page.locator("#confirm")).to_be_hidden()
        assert await letters.count() == 1

        await purge.click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("#toast")).to_contain_text(
            "purge refused: the action token is missing"
        )
        assert await letters.count() == 1

        await page.locator("#token").fill("not-the-token-0123456789")
        await page.locator("#token-save").click()
        await purge.click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("#toast")).to_contain_text(
            "the action token is wrong"
        )
        assert await letters.count() == 1

        # Another origin (localhost is not 127.0.0.1 to a browser) with the right
        # token: the browser's preflight is refused, or the server refuses.
        await page.goto(f"http://localhost:{served.port}/")
        outcome = await page.evaluate(
            """async ([url, body, token]) => {
                try {
                    const response = await fetch(url, {
                        method: "POST", body,
                        headers: {"Content-Type": "application/json",
                                  "X-Backbone-Token": token},
                    });
                    return `status ${response.status}`;
                } catch (error) {
                    return "blocked";
                }
            }""",
            [
                f"http://127.0.0.1:{served.port}/api/deadletters/purge",
                json.dumps({"uri": URI, "ids": [dlq_id]}),
                TOKEN,
            ],
        )
        assert outcome in ("blocked", "status 403"), outcome
        assert await letters.count() == 1


async def test_a_read_only_page_has_no_action_buttons_and_refuses_posts(
    real_bus: backbone.Backbone,
) -> None:
    executable = chromium()
    markup = '<img src=x onerror="document.title=1">card declined'
    _, dlq_id = await dead_letter(real_bus, "billing", error=markup)
    async with serving(real_bus) as served, browser_page(executable) as page:
        await page.goto(f"{served.url}#token={TOKEN}")
        card = page.locator(f'.letter[data-letter="{dlq_id}"]')
        await expect(card).to_contain_text(markup)  # shown as text, never as markup
        assert await page.locator("#letters img").count() == 0
        await expect(page.locator("#mode")).to_have_text("read-only")
        assert await page.locator("[data-action]").count() == 0
        status = await page.evaluate(
            """async ([body, token]) => (await fetch("/api/deadletters/redrive", {
                method: "POST", body,
                headers: {"Content-Type": "application/json",
                          "X-Backbone-Token": token},
            })).status""",
            [json.dumps({"uri": URI, "ids": [dlq_id]}), TOKEN],
        )
        assert status == 403
        assert await DeadLetters(real_bus, URI).count() == 1


async def test_the_page_shows_redis_away_and_recovers_by_itself(
    real_bus: backbone.Backbone, proxy: Any, environment: str
) -> None:
    executable = chromium()
    await publish(real_bus, 1, 2)
    async with (
        backbone.Backbone(
            proxy.url, environment=environment, connect_timeout=1.0, command_timeout=2.0
        ) as watched,
        serving(watched) as served,
        browser_page(executable) as page,
    ):
        await page.goto(served.url)
        length = cell(page, "streams", f'data-stream="{URI}"', "length")
        await expect(length).to_have_text("2")
        await expect(page.locator("#banner")).to_be_hidden()

        proxy.refuse(True)
        await expect(page.locator("#banner")).to_contain_text("Redis unreachable since")
        await expect(page.locator("#status")).to_have_attribute(
            "data-state", "redis-down"
        )
        await expect(length).to_have_text("2")  # the last figures stay, marked

        proxy.refuse(False)
        await publish(real_bus, 3)
        await expect(page.locator("#banner")).to_be_hidden()
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        await expect(length).to_have_text("3")
