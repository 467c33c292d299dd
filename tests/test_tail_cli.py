"""`backbone tail` on a real Redis: following a stream without a group, whatever
its entries and payloads hold."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from asyncio.subprocess import PIPE, Process
from pathlib import Path

import pytest

import backbone
from backbone.codec import pack_value
from backbone.events import reset_current_event, set_current_event
from conftest import RedisServer, free_port
from helpers import moment, write_bad_inputs
from test_dlq_cli import (
    PACKING,
    ROOT,
    assert_one_error_line,
    backbone_cli,
    command_env,
    down_url,
)

URI = "parcels"
WHEN = moment().isoformat()


def tail_cli(url: str, environment: str, *args: str) -> list[str]:
    return ["tail", URI, *args, "--redis-url", url, "--environment", environment]


async def start_tail(url: str, environment: str, *args: str) -> Process:
    """Start ``backbone tail`` and wait until it follows the stream (from then on,
    every new event is printed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backbone",
        *tail_cli(url, environment, *args),
        cwd=ROOT,
        stdout=PIPE,
        stderr=PIPE,
        env=command_env(),
    )
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
    assert line.startswith(b"following bb:{"), line
    return process


async def finish(process: Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def publish(bus: backbone.Backbone, count: int, first: int = 0) -> list[str]:
    producer = bus.producer(URI)
    return [
        (await producer.publish(PACKING, (f"u{i}@x", i, moment()))).id
        for i in range(first, first + count)
    ]


async def odd_entries(bus: backbone.Backbone) -> dict[str, str]:
    """Entries a tail must show without failing; returns what -> entry id."""
    keys = bus.keys(URI)
    found = await write_bad_inputs(bus, URI)
    cause = backbone.EventContext(
        id=backbone.EventId(keys.stream, found["missing-payload"]),
        operation="packing",
        version=1,
        contract="ShipmentTracking",
        producer="p",
        produced_at=None,
        group="billing",
        consumer="billing-1",
        delivery_count=1,
        correlation_id=f"{keys.stream}/1-1",
    )
    token = set_current_event(cause)
    try:
        caused = await bus.producer(URI).publish(PACKING, ("c@x", 7, moment()))
    finally:
        reset_current_event(token)
    found["caused"] = caused.id

    async def raw(fields: dict[str, bytes | str], payload: object) -> str:
        entry = (await bus.redis.xadd(keys.stream, fields)).decode()
        if isinstance(payload, dict):
            await bus.redis.hset(keys.payload(entry), mapping=payload)
        elif payload is not None:
            await bus.redis.set(keys.payload(entry), "not a hash")
        return entry

    found["wrong-type"] = await raw({"o": "packing"}, "string")
    found["odd-metadata"] = await raw(
        {"o": "packing", "t": "soon", "v": "x", "p": "evil\x1b[31m", "zz": b"\xff\x00"},
        {"data": pack_value(b"\x00\xff"), "text": pack_value("\x1b[2Jred")},
    )
    return found


async def test_tail_shows_every_kind_of_entry(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    ids = await odd_entries(real_bus)
    stream = real_bus.keys(URI).stream
    total = await real_bus.redis.xlen(stream)

    shown = backbone_cli(
        *tail_cli(real_url, environment, "--from", "beginning", "--count", str(total))
    )
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout  # escapes are shown, never sent to a terminal
    lines = shown.stdout.splitlines()
    assert len(lines) == total
    line = {}
    for what, entry in ids.items():
        [line[what]] = [x for x in lines if x.startswith(f"{entry} ")]

    caused = line["caused"]
    assert f"packing(email='c@x', product_id=7, time={WHEN})" in caused
    assert "contract=ShipmentTracking version=1" in caused
    assert "producer=" in caused
    assert "produced=20" in caused
    assert f"correlation={stream}/1-1" in caused
    assert f"causation={stream}/{ids['missing-payload']}" in caused

    missing = real_bus.keys(URI).payload(ids["missing-payload"])
    assert (
        f"packing(<payload missing: {missing} does not exist>)"
        in line["missing-payload"]
    )
    assert "product_id=<undecodable 1 bytes b'\\xc1'>" in line["undecodable"]
    assert "product_id='one'" in line["invalid-payload"]  # untyped: shown as it is
    assert line["unknown-operation"].split()[1].startswith("returned(")
    assert "<no operation>(<payload missing" in line["malformed-entry"]
    assert line["malformed-entry"].endswith("[x='y']")
    assert "<payload unreadable: " in line["wrong-type"]
    assert "is a string, not a hash" in line["wrong-type"]
    odd = line["odd-metadata"]
    assert "data=b'\\x00\\xff'" in odd
    assert "text='\\x1b[2Jred'" in odd
    assert "t='soon'" in odd
    assert "version=x" in odd
    assert "producer='evil\\x1b[31m'" in odd
    assert "zz=b'\\xff\\x00'" in odd

    as_json = backbone_cli(
        *tail_cli(
            real_url,
            environment,
            "--from",
            "beginning",
            "--count",
            str(total),
            "--json",
        )
    )
    assert as_json.returncode == 0, as_json.stderr
    events = {e["id"]: e for e in map(json.loads, as_json.stdout.splitlines())}
    assert len(events) == total
    first = events[ids["caused"]]
    assert first["payload"] == {"email": "c@x", "product_id": 7, "time": WHEN}
    assert (first["operation"], first["version"]) == ("packing", 1)
    assert first["causation_id"] == f"{stream}/{ids['missing-payload']}"
    assert first["stream"] == stream
    assert first["payload_error"] is None
    assert events[ids["missing-payload"]]["payload"] is None
    assert events[ids["missing-payload"]]["payload_error"].startswith("missing: ")
    assert events[ids["wrong-type"]]["payload_error"].startswith("unreadable: ")
    weird = events[ids["odd-metadata"]]
    assert weird["produced_at"] is None
    assert weird["version"] is None
    assert weird["metadata"]["t"] == "soon"
    assert weird["metadata"]["zz"] == "base64:/wA="
    assert weird["payload"] == {"data": "base64:AP8=", "text": "\x1b[2Jred"}
    assert events[ids["undecodable"]]["payload"]["product_id"].startswith(
        "<undecodable: "
    )


async def test_tail_follows_new_events_only(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    await publish(real_bus, 2)
    process = await start_tail(real_url, environment, "--count", "3", "--json")
    new = await publish(real_bus, 3, first=10)
    code, out, err = await finish(process)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in events] == new
    assert [e["payload"]["product_id"] for e in events] == [10, 11, 12]


async def test_tail_of_a_stream_that_does_not_exist_yet(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    process = await start_tail(real_url, environment, "--count", "1")
    [new] = await publish(real_bus, 1)
    code, out, err = await finish(process)
    assert code == 0, err
    assert out.startswith(f"{new} packing(email='u0@x', product_id=0")


async def test_tail_from_an_id_includes_it(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    stream = real_bus.keys(URI).stream
    for entry in ("5-0", "5-1", "6-0", "7-3"):
        await real_bus.redis.xadd(stream, {"o": "packing"}, id=entry)

    def shown(start: str, count: int) -> list[str]:
        result = backbone_cli(
            *tail_cli(real_url, environment, "--from", start, "--count", str(count))
        )
        assert result.returncode == 0, result.stderr
        return [line.split()[0] for line in result.stdout.splitlines()]

    assert shown("5-1", 2) == ["5-1", "6-0"]
    assert shown("6-0", 2) == ["6-0", "7-3"]
    assert shown("5-2", 1) == ["6-0"]  # not an entry: the next one
    assert shown("0-0", 1) == ["5-0"]
    assert shown("beginning", 4) == ["5-0", "5-1", "6-0", "7-3"]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
async def test_signals_end_it_quietly(
    real_bus: backbone.Backbone, real_url: str, environment: str, number: int
) -> None:
    process = await start_tail(real_url, environment)
    [first] = await publish(real_bus, 1)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert line.startswith(first.encode())
    process.send_signal(number)
    code, out, err = await finish(process)
    assert (code, out, err) == (0, "", "")


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ("abc", "--from 'abc' is not now, beginning or an entry id"),
        ("1-x", "--from '1-x' is not an entry id"),
        ("1", "--from '1' is not an entry id"),
    ],
)
def test_bad_start_is_refused_before_redis(start: str, message: str) -> None:
    result = backbone_cli(*tail_cli(down_url(), "dev", "--from", start))
    assert_one_error_line(result, 2, message, "<ms>-<seq>")


def test_a_bad_log_level_is_refused() -> None:
    result = backbone_cli(*tail_cli(down_url(), "dev", "--log-level", "loud"))
    assert_one_error_line(result, 2, "--log-level 'loud' is not one of", "debug")


def test_redis_down() -> None:
    result = backbone_cli(*tail_cli(down_url(), "dev"))
    assert_one_error_line(result, 1, "cannot reach Redis", "--redis-url")


async def test_not_a_stream(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    await real_bus.redis.hset(real_bus.keys(URI).stream, "a", "b")
    result = backbone_cli(*tail_cli(real_url, environment))
    assert_one_error_line(result, 1, "holds a hash, not a stream")
    invalid = backbone_cli("tail", "a b", "--redis-url", real_url)
    assert_one_error_line(invalid, 1, "uri 'a b' is not valid")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
async def test_server_going_away_ends_it_with_one_line(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        process = await start_tail(server.url, "dev")
    finally:
        server.stop()
    code, out, err = await finish(process)
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("error: cannot reach Redis")
    assert len(err.strip().splitlines()) == 1
