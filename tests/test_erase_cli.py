"""`backbone erase` on a real Redis, and what the tools show of personal values:
`<personal>` while the subject's key exists, `<erased>` after."""

from __future__ import annotations

import json

import backbone
from backbone.deadletters import DeadLetters
from conftest import eventually
from personal_helpers import CUSTOMERS, REGISTERED, Seen, dispatcher, holds
from test_dlq_cli import assert_one_error_line, backbone_cli, down_url

URI = "customers"
ADA = "ada@example.com"


def erase_cli(url: str, environment: str, *args: str) -> list[str]:
    return ["erase", *args, "--redis-url", url, "--environment", environment]


def tail(url: str, environment: str, *args: str) -> list[str]:
    done = backbone_cli(
        "tail",
        URI,
        "--from",
        "beginning",
        "--count",
        "2",
        *args,
        "--redis-url",
        url,
        "--environment",
        environment,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def test_erase_says_what_it_did_and_the_tools_show_erased(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    bus = real_bus
    producer = bus.producer(URI, CUSTOMERS.spec)
    await producer.publish(REGISTERED, ("c-1", ADA, "UK"))
    await producer.publish(REGISTERED, ("c-2", "bob@example.org", "FR"))
    options = backbone.SubscriptionOptions(retry=backbone.RetryPolicy(max_deliveries=1))
    async with bus.subscribe(
        URI,
        dispatcher(CUSTOMERS, Seen(failing={ADA})),
        group="g",
        start=backbone.StartFrom.BEGINNING,
        options=options,
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1)
    [letter] = await DeadLetters(bus, URI).list()

    before = tail(real_url, environment)
    assert "email=<personal>" in before[0]
    assert "customer_id='c-1'" in before[0]
    assert ADA not in "\n".join(before)
    shown = backbone_cli(
        "dlq",
        "show",
        letter.id,
        "--uri",
        URI,
        "--redis-url",
        real_url,
        "--environment",
        environment,
    )
    assert json.loads(shown.stdout)["payload"]["email"] == "<personal>"

    done = backbone_cli(*erase_cli(real_url, environment, "c-1", "--yes"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("erased the subject's personal data")
    assert len(done.stdout.strip().splitlines()) == 1

    after = tail(real_url, environment)
    assert "email=<erased>" in after[0]
    assert "email=<personal>" in after[1]  # another subject
    as_json = [json.loads(line) for line in tail(real_url, environment, "--json")]
    assert as_json[0]["payload"]["email"] == "<erased>"
    assert as_json[0]["payload"]["country"] == "UK"
    shown = backbone_cli(
        "dlq",
        "show",
        letter.id,
        "--uri",
        URI,
        "--redis-url",
        real_url,
        "--environment",
        environment,
    )
    payload = json.loads(shown.stdout)["payload"]
    assert payload == {"customer_id": "c-1", "email": "<erased>", "country": "UK"}
    assert not await holds(bus, ADA)

    again = backbone_cli(*erase_cli(real_url, environment, "-y", "c-1"))
    assert again.returncode == 0, again.stderr
    assert "already erased" in again.stdout
    nothing = backbone_cli(*erase_cli(real_url, environment, "nobody", "--yes"))
    assert nothing.returncode == 0, nothing.stderr
    assert "no personal data" in nothing.stdout


def test_erase_mistakes_are_one_line(real_url: str) -> None:
    without_yes = backbone_cli(*erase_cli(real_url, "dev", "c-1"))
    assert_one_error_line(without_yes, 2, "cannot be undone", "--yes")
    empty = backbone_cli(*erase_cli(real_url, "dev", "", "--yes"))
    assert_one_error_line(empty, 2, "the subject is empty")
    bad_environment = backbone_cli(*erase_cli(real_url, "no space", "c-1", "--yes"))
    assert_one_error_line(bad_environment, 1, "environment 'no space' is not valid")
    down = backbone_cli(*erase_cli(down_url(), "dev", "c-1", "--yes"))
    assert_one_error_line(down, 1, "Redis")
    missing = backbone_cli("erase", "--yes")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
