"""`backbone dlq list|show|retry|purge` against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"


def cli(url: str, environment: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "backbone",
            "dlq",
            *args,
            "--uri",
            URI,
            "--redis-url",
            url,
            "--environment",
            environment,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_list_show_retry_and_purge(real_url: str, environment: str) -> None:
    async with backbone.Backbone(real_url, environment=environment) as bus:
        producer = shipment_tracking_producer(bus, URI)
        first = await producer.packing("a@example.com", 1, moment())
        second = await producer.packing("b@example.com", 2, moment())
        handler = Flaky(failures=1)
        options = backbone.SubscriptionOptions(
            retry=backbone.RetryPolicy(max_deliveries=1)
        )
        async with subscribe_shipment_tracking(
            bus,
            URI,
            handler,
            group="billing",
            start=backbone.StartFrom.BEGINNING,
            options=options,
        ) as sub:
            await eventually(lambda: sub.stats.dead_lettered == 2)

            listed = cli(real_url, environment, "list")
            assert listed.returncode == 0, listed.stderr
            assert "2 dead letter(s)" in listed.stdout
            assert first.id in listed.stdout
            assert "handler-error" in listed.stdout
            assert "billing" in listed.stdout

            as_json = cli(real_url, environment, "list", "--json", "--group", "billing")
            rows = [json.loads(line) for line in as_json.stdout.splitlines()]
            assert {row["event_id"] for row in rows} == {str(first), str(second)}
            letter_id = next(r["id"] for r in rows if r["event_id"] == str(first))

            shown = cli(real_url, environment, "show", letter_id)
            assert shown.returncode == 0, shown.stderr
            detail = json.loads(shown.stdout)
            assert detail["payload"] == {
                "email": "a@example.com",
                "product_id": 1,
                "time": moment().isoformat(),
            }
            assert detail["error_type"] == "RuntimeError"
            assert detail["metadata"]["o"] == "packing"
            assert "Traceback" in detail["traceback"]

            missing = cli(real_url, environment, "show", "1-1")
            assert missing.returncode == 1
            assert "no dead letter 1-1" in missing.stderr

            retried = cli(real_url, environment, "retry", letter_id)
            assert retried.returncode == 0, retried.stderr
            assert "re-driven: 1" in retried.stdout
            # The re-driven event is handled (the handler fails only once per event).
            await eventually(lambda: handler.count() == 1, message="re-driven event")
            assert handler.calls[0][2].original_id == first

        assert await backbone.DeadLetters(bus, URI).count() == 1
        refused = cli(real_url, environment, "purge")
        assert refused.returncode == 2
        assert "pass --all" in refused.stderr
        purged = cli(real_url, environment, "purge", "--all", "--yes")
        assert purged.returncode == 0, purged.stderr
        assert "purged: 1" in purged.stdout
        assert await backbone.DeadLetters(bus, URI).count() == 0
        for key in (bus.keys(URI).dead_letter_payload("billing", second.id),):
            assert await bus.redis.exists(key) == 0
        await bus.redis.delete(
            *[k async for k in bus.redis.scan_iter(match=f"bb:{{{environment}:*")]
        )
