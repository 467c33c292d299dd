"""`backbone inspect` and backbone.inspection: streams, groups, consumers, lag and
pending events, on both backends (the library) and as a command on a real Redis."""

from __future__ import annotations

import json
import re

import pytest

import backbone
from backbone.inspection import inspect_stream, inspect_streams, stream_uris
from helpers import moment
from test_dlq_cli import (
    PACKING,
    assert_one_error_line,
    backbone_cli,
    backbone_on_terminal,
    dead_letter,
    down_url,
    lines_with,
)

URI = "orders"  # the stream test_dlq_cli.dead_letter writes to


async def publish(bus: backbone.Backbone, uri: str, count: int) -> list[str]:
    producer = bus.producer(uri)
    ids = []
    for index in range(count):
        event = await producer.publish(PACKING, (f"u{index}@x", index, moment()))
        ids.append(event.id)
    return ids


async def scene(bus: backbone.Backbone) -> dict[str, list[str]]:
    """Two streams with groups, pending events, a dead letter and the other keys
    a stream has; and keys that are not streams of this environment."""
    orders = await publish(bus, URI, 5)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "billing", id="0")
    # billing-1 reads two events and acknowledges neither; billing-2 reads one
    # and acknowledges it.
    await bus.redis.xreadgroup("billing", "billing-1", {stream: ">"}, count=2)
    await bus.redis.xreadgroup("billing", "billing-2", {stream: ">"}, count=1)
    await bus.redis.xack(stream, "billing", orders[2])
    # The oldest pending event was last delivered a minute ago.
    await bus.redis.xclaim(stream, "billing", "billing-1", 0, [orders[0]], idle=60_000)
    await bus.redis.xgroup_create(stream, "shipping", id="$")

    audit = await publish(bus, "audit.log", 2)

    last, letter = await dead_letter(bus, "billing")  # a sixth event, dead-lettered
    # Keys that are not streams of this environment, or not streams at all.
    await bus.redis.xadd(f"bb:{{{bus.environment}x:elsewhere}}", {"o": "packing"})
    await bus.redis.xadd(f"bb:{{{bus.environment}:odd}}:extra", {"o": "x"})
    await bus.redis.set(f"bb:{{{bus.environment}:not-a-stream}}", "1")
    return {"orders": orders, "audit": audit, "last": [last.id], "letter": [letter]}


async def test_inspection_reads_every_stream_of_the_environment(
    bus: backbone.Backbone,
) -> None:
    ids = await scene(bus)
    assert await stream_uris(bus) == ["audit.log", URI]

    audit, orders = await inspect_streams(bus)
    assert (audit.uri, audit.length, audit.groups) == ("audit.log", 2, ())
    assert (audit.first_id, audit.last_id) == (ids["audit"][0], ids["audit"][1])
    assert audit.dead_letters == 0

    assert orders.key == bus.keys(URI).stream
    assert orders.length == 6
    assert orders.first_id == ids["orders"][0]
    assert orders.last_id == orders.last_generated_id == ids["last"][0]
    assert orders.first_time is not None
    assert orders.first_time.timestamp() * 1000 == int(ids["orders"][0].split("-")[0])
    assert orders.dead_letters == 1
    if bus.embedded:  # fakeredis has no MEMORY command
        assert orders.memory_bytes is None
    else:
        assert orders.memory_bytes is not None
        assert orders.memory_bytes > 500

    billing, shipping = orders.groups
    assert billing.name == "billing"
    assert billing.pending == 2
    assert billing.last_delivered_id == ids["orders"][2]
    assert billing.lag == 3  # three events never delivered to the group
    assert billing.oldest_pending_id == ids["orders"][0]
    assert billing.oldest_pending_consumer == "billing-1"
    assert billing.oldest_pending_idle_ms is not None
    assert billing.oldest_pending_idle_ms >= 60_000
    assert billing.oldest_pending_deliveries == 2  # read, then claimed
    assert [(c.name, c.pending) for c in billing.consumers] == [
        ("billing-1", 2),
        ("billing-2", 0),
    ]
    assert all(c.idle_ms is not None and c.idle_ms >= 0 for c in billing.consumers)

    assert shipping.name == "shipping"
    assert (shipping.pending, shipping.consumers) == (0, ())
    assert shipping.oldest_pending_id is None
    assert shipping.oldest_pending_idle_ms is None


async def test_inspection_of_one_stream(bus: backbone.Backbone) -> None:
    assert await inspect_stream(bus, "absent") is None
    assert await inspect_streams(bus, "absent") == []
    await publish(bus, "one", 1)
    [one] = await inspect_streams(bus, "one")
    assert (one.uri, one.length, one.first_id) == ("one", 1, one.last_id)
    # A stream whose events were all deleted: no first nor last event.
    [entry] = await publish(bus, "emptied", 1)
    await bus.redis.xdel(bus.keys("emptied").stream, entry)
    emptied = await inspect_stream(bus, "emptied")
    assert emptied is not None
    assert (emptied.length, emptied.first_id, emptied.last_id) == (0, None, None)
    assert (emptied.first_time, emptied.last_generated_id) == (None, entry)
    await bus.redis.set(bus.keys("wrong").stream, "1")
    with pytest.raises(backbone.BackboneError, match="holds a string, not a stream"):
        await inspect_stream(bus, "wrong")


def inspect_cli(url: str, environment: str, *args: str) -> tuple[int, str, str]:
    result = backbone_cli(
        "inspect", *args, "--redis-url", url, "--environment", environment
    )
    return result.returncode, result.stdout, result.stderr


async def test_inspect_command(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    ids = await scene(real_bus)

    code, out, err = inspect_cli(real_url, environment, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["format"] == 1
    assert document["environment"] == environment
    assert [s["uri"] for s in document["streams"]] == ["audit.log", URI]
    orders = document["streams"][1]
    assert orders["length"] == 6
    assert orders["first_id"] == ids["orders"][0]
    assert orders["first_time"].endswith("+00:00")
    assert orders["dead_letters"] == 1
    assert orders["memory_bytes"] > 500
    billing = orders["groups"][0]
    assert billing["name"] == "billing"
    assert (billing["pending"], billing["lag"]) == (2, 3)
    assert billing["oldest_pending_id"] == ids["orders"][0]
    assert billing["oldest_pending_idle_ms"] >= 60_000
    assert billing["consumers"][0] == {
        "name": "billing-1",
        "pending": 2,
        "idle_ms": billing["consumers"][0]["idle_ms"],
        "inactive_ms": billing["consumers"][0]["inactive_ms"],
    }

    code, out, err = inspect_cli(real_url, environment, URI)
    assert code == 0, err
    assert "1 stream(s)" in out
    assert "audit.log" not in out
    # The streams row: length, first and last event, dead letters.
    [stream_row] = lines_with(out, f"{URI} ", ids["orders"][0], ids["last"][0])
    assert re.search(r"\s6\s.*UTC.*UTC.*\s1\s.*\s2\s", stream_row), stream_row
    # The group's row: its oldest pending event, to whom, delivered how long ago.
    [group_row] = lines_with(out, " billing ", f"{ids['orders'][0]} to billing-1")
    assert re.search(r"1 min \d+ s ago", group_row), group_row
    assert re.search(r"\s2\s.*\s3\s.*\s2\s", group_row), (
        group_row
    )  # 2 members, lag 3, 2 pending
    assert len(lines_with(out, " billing ", " billing-2 ")) == 1

    # A narrow terminal: the ids stay whole.
    code, shown = backbone_on_terminal(
        "inspect",
        URI,
        "--redis-url",
        real_url,
        "--environment",
        environment,
        columns=50,
    )
    assert code == 0, shown
    assert ids["orders"][0] in shown
    assert ids["orders"][2] in shown


async def test_inspect_errors(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    code, out, err = inspect_cli(real_url, environment, "--json")
    assert code == 0, err
    assert json.loads(out)["streams"] == []
    code, out, err = inspect_cli(real_url, environment)
    assert (code, out.strip()) == (
        0,
        f"no backbone streams in environment {environment!r}",
    )

    missing = backbone_cli(
        "inspect", "nope", "--redis-url", real_url, "--environment", environment
    )
    assert_one_error_line(missing, 1, "no stream 'nope'", "backbone inspect")

    await real_bus.redis.set(real_bus.keys("text").stream, "1")
    wrong = backbone_cli(
        "inspect", "text", "--redis-url", real_url, "--environment", environment
    )
    assert_one_error_line(wrong, 1, "holds a string, not a stream")

    invalid = backbone_cli("inspect", "a b", "--redis-url", real_url)
    assert_one_error_line(invalid, 1, "uri 'a b' is not valid")


@pytest.mark.parametrize("args", [(), ("--json",), (URI,)])
def test_inspect_with_redis_down(args: tuple[str, ...]) -> None:
    result = backbone_cli("inspect", *args, "--redis-url", down_url())
    assert_one_error_line(result, 1, "cannot reach Redis", "--redis-url")
    assert result.stdout == ""
