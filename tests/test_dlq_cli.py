"""`backbone dlq list|show|retry|purge` against a real Redis, and the one-line
errors of the CLI's commands (the helpers here serve the other CLI tests too)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

import backbone
from backbone.deadletters import DeadLetter, DeadLetterReason
from conftest import eventually, free_port
from contracts.shipment_tracking import ShipmentTracking
from helpers import Flaky, moment

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"
PACKING = backbone.bind(ShipmentTracking).operation("packing")


def command_env(columns: int = 250) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"}
    env["COLUMNS"] = str(columns)
    return env


def backbone_cli(*args: str, columns: int = 250) -> subprocess.CompletedProcess[str]:
    """Run ``backbone ARGS`` as a subprocess, its output in a pipe."""
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=command_env(columns),
    )


def backbone_on_terminal(*args: str, columns: int) -> tuple[int, str]:
    """Run ``backbone ARGS`` with a COLUMNS wide terminal as its output; returns
    the exit code and what it printed, without colours."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "backbone", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**command_env(columns), "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = process.wait(timeout=60)
    text = b"".join(chunks).decode(errors="replace")
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def down_url() -> str:
    """A Redis URL where nothing listens (connect attempts fail at once, and time
    out after half a second at worst)."""
    return f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5"


def assert_one_error_line(
    result: subprocess.CompletedProcess[str], code: int, *expected: str
) -> str:
    """The command failed with CODE and one line on stderr holding EXPECTED."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def lines_with(text: str, *needles: str) -> list[str]:
    """The lines of TEXT that hold every one of NEEDLES."""
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def cli(url: str, environment: str, *args: str) -> subprocess.CompletedProcess[str]:
    return dlq_cli(url, environment, *args)


def dlq_cli(
    url: str, environment: str, *args: str, columns: int = 250
) -> subprocess.CompletedProcess[str]:
    return backbone_cli(
        "dlq",
        *args,
        "--uri",
        URI,
        "--redis-url",
        url,
        "--environment",
        environment,
        columns=columns,
    )


async def dead_letter(
    bus: backbone.Backbone, group: str, error: str = "boom", *, old: bool = False
) -> tuple[backbone.EventId, str]:
    """Publish an event to URI and dead-letter it for GROUP the way a consumer
    does (dead_letter.lua); returns the event's id and the dead letter's id.
    OLD: the event gets an id from long ago, which no dead letter can share."""
    if old:
        keys = bus.keys(URI)
        raw = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "x"}
        entry = (await bus.redis.xadd(keys.stream, raw, id="1-1")).decode()
        await bus.redis.hset(
            keys.payload(entry),
            mapping=dict(
                zip(
                    ("email", "product_id", "time"),
                    PACKING.encode(("a@example.com", 1, moment())),
                    strict=True,
                )
            ),
        )
        event = backbone.EventId(keys.stream, entry)
    else:
        event = await bus.producer(URI).publish(PACKING, ("a@example.com", 1, moment()))
    keys = bus.keys(URI)
    [(_, fields)] = await bus.redis.xrange(keys.stream, event.id, event.id)
    letter = DeadLetter.of(
        event,
        group=group,
        consumer=f"{group}-1",
        handler="Billing.packing",
        reason=DeadLetterReason.HANDLER_ERROR,
        error=RuntimeError(error),
        deliveries=3,
        metadata=fields,
    )
    dlq_id = await bus.scripts.dead_letter.move(
        bus.redis,
        stream=keys.stream,
        dead_letters=keys.dead_letters,
        payload=keys.payload(event.id),
        payload_copy=keys.dead_letter_payload(group, event.id),
        group=group,
        entry_id=event.id,
        only_if_pending=False,
        fields=letter.to_fields(fields),
    )
    assert dlq_id is not None
    return event, dlq_id


async def test_list_show_retry_and_purge(real_url: str, environment: str) -> None:
    from contracts.shipment_tracking_gen import (
        shipment_tracking_producer,
        subscribe_shipment_tracking,
    )

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


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (("show", "abc"), "'abc'"),
        (("show", "1-"), "'1-'"),
        (("retry", "1-1", "1-x"), "'1-x'"),
        (("retry", "99999999999999999999-0"), "'99999999999999999999-0'"),
        (("purge", "1-2-3"), "'1-2-3'"),
        (("purge", " 1-2"), "' 1-2'"),
    ],
)
def test_malformed_ids_are_refused_before_redis(
    args: tuple[str, ...], bad: str
) -> None:
    # Nothing listens at the URL: a message about the id, not about Redis, shows
    # that the id was checked before connecting.
    result = dlq_cli(down_url(), "dev", *args)
    assert_one_error_line(result, 2, f"dead letter id {bad} is not an entry id")
    assert "<ms>-<seq>" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("list", "--json"),
        ("show", "1-1"),
        ("retry", "1-1"),
        ("purge", "1-1"),
    ],
)
def test_redis_down_is_one_line(args: tuple[str, ...]) -> None:
    result = dlq_cli(down_url(), "dev", *args)
    assert_one_error_line(result, 1, "cannot reach Redis", "--redis-url")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("retry",), "name dead letter ids, or pass --all"),
        (("retry", "1-1", "--all"), "not both"),
        (("purge", "1-1", "--group", "billing"), "use it with --all"),
    ],
)
def test_contradicting_arguments(args: tuple[str, ...], expected: str) -> None:
    assert_one_error_line(dlq_cli(down_url(), "dev", *args), 2, expected)


async def test_unknown_ids_fail_and_change_nothing(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    event, letter_id = await dead_letter(real_bus, "billing")
    letters = backbone.DeadLetters(real_bus, URI)
    stream = real_bus.keys(URI).stream

    shown = dlq_cli(real_url, environment, "show", "1-1")
    assert_one_error_line(shown, 1, "no dead letter 1-1", "backbone dlq list")

    # One unknown id among known ones: nothing happens, and the exit says so.
    for command, outcome in (("retry", "re-driven"), ("purge", "purged")):
        result = dlq_cli(real_url, environment, command, letter_id, "1-1")
        assert_one_error_line(
            result, 1, "no dead letter 1-1", f"nothing was {outcome}", URI
        )
        assert result.stdout == ""
        assert await letters.count() == 1
        assert await real_bus.redis.xlen(stream) == 1

    retried = dlq_cli(real_url, environment, "retry", letter_id)
    assert retried.returncode == 0, retried.stderr
    assert "re-driven: 1" in retried.stdout
    assert await letters.count() == 0
    assert await real_bus.redis.xlen(stream) == 2

    # Now gone: asking again is an error, not a silent "re-driven: 0".
    again = dlq_cli(real_url, environment, "retry", letter_id)
    assert_one_error_line(again, 1, f"no dead letter {letter_id}")
    gone = dlq_cli(real_url, environment, "purge", letter_id)
    assert_one_error_line(gone, 1, f"no dead letter {letter_id}")
    assert event.id  # the event itself stays in the stream
    assert await real_bus.redis.xlen(stream) == 2


async def test_ids_are_never_folded(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    group = "billing-" + "x" * 60
    event, letter_id = await dead_letter(real_bus, group, error="e " * 80)

    piped = dlq_cli(real_url, environment, "list", columns=40)
    assert piped.returncode == 0, piped.stderr
    # A pipe gets lines as long as their content: one row, nothing folded.
    assert len(lines_with(piped.stdout, letter_id, event.id, group)) == 1, piped.stdout

    code, shown = backbone_on_terminal(
        "dlq",
        "list",
        "--uri",
        URI,
        "--redis-url",
        real_url,
        "--environment",
        environment,
        columns=40,
    )
    assert code == 0, shown
    # A narrow terminal folds the text columns, never an id.
    assert letter_id in shown
    assert event.id in shown
    assert "1 dead letter(s)" in shown


async def test_an_event_id_finds_its_dead_letter(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    """Logs name the event (`dead-lettered <event id>`): the commands take that
    id too, and say which dead letter it is."""
    event, letter_id = await dead_letter(real_bus, "billing", old=True)
    shown = dlq_cli(real_url, environment, "show", event.id)
    assert shown.returncode == 0, shown.stderr
    assert f'"id": "{letter_id}"' in shown.stdout
    assert f"{event.id} is an event id; its dead letter is {letter_id}" in (
        shown.stderr
    )
    retried = dlq_cli(real_url, environment, "retry", event.id)
    assert retried.returncode == 0, retried.stderr
    assert "re-driven: 1" in retried.stdout
    assert await backbone.DeadLetters(real_bus, URI).get(letter_id) is None
