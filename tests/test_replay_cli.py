"""`backbone replay` on a real Redis: a range of a stream into a handler that a
module:function makes, its progress and summary, and its errors as one line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

import backbone
from backbone.store.ranges import next_id
from test_dlq_cli import (
    ROOT,
    assert_one_error_line,
    backbone_cli,
    backbone_on_terminal,
    command_env,
    down_url,
)
from test_replay import publish, raw_packing

URI = "parcels"

HANDLERS = '''
import asyncio
import os
import sys

from contracts import shipment_tracking_gen  # the dispatcher of its contract


class Packings:
    """Writes the id of each packing event it handles to $REPLAY_OUT."""

    async def packing(self, email, product_id, time, *, context):
        if product_id == int(os.environ.get("REPLAY_FAIL_ON", "-1")):
            raise RuntimeError(f"product {product_id} is cursed")
        if product_id == int(os.environ.get("REPLAY_BLOCK_ON", "-1")):
            sys.stderr.write("blocked\\n")
            sys.stderr.flush()
            await asyncio.Event().wait()
        with open(os.environ["REPLAY_OUT"], "a") as out:
            out.write(f"{context.id.id} {context.group} {context.delivery_count}\\n")


def make():
    return Packings()


def with_bus(bus):
    return shipment_tracking_gen.ShipmentTrackingDispatcher(Packings(), partial=True)


def broken():
    raise ValueError("no configuration")
'''


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of handlers on the commands' path; returns the file they write."""
    (tmp_path / "replay_handlers.py").write_text(textwrap.dedent(HANDLERS))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    out = tmp_path / "replayed.txt"
    monkeypatch.setenv("REPLAY_OUT", str(out))
    return out


def forget(out: Path) -> None:
    out.unlink()


def replay_cli(url: str, environment: str, *args: str) -> list[str]:
    return ["replay", URI, *args, "--redis-url", url, "--environment", environment]


def lines(out: Path) -> list[str]:
    """What the handlers wrote: one line per event, its id, group and count."""
    return out.read_text().splitlines() if out.exists() else []


def handled(out: Path) -> list[str]:
    return [line.split()[0] for line in lines(out)]


async def test_an_id_range_into_a_handler(
    real_bus: backbone.Backbone, real_url: str, environment: str, handlers: Path
) -> None:
    ids = await publish(real_bus, 5)
    result = backbone_cli(
        *replay_cli(
            real_url,
            environment,
            "--handler",
            "replay_handlers:make",
            "--from",
            ids[1],
            "--to",
            ids[3],
        )
    )
    assert result.returncode == 0, result.stderr
    assert handled(handlers) == ids[1:4]
    assert lines(handlers)[0] == f"{ids[1]} replay 1"
    stream = real_bus.keys(URI).stream
    assert result.stdout.splitlines() == [
        f"replayed 3 events of {stream} (0 skipped: not handled, 0 undecodable), "
        f"{ids[1]} to {ids[3]}"
    ]

    forget(handlers)
    counted = backbone_cli(
        *replay_cli(
            real_url,
            environment,
            "--handler",
            "replay_handlers:with_bus",
            "--count",
            "2",
        )
    )
    assert counted.returncode == 0, counted.stderr
    assert handled(handlers) == ids[:2]


async def test_a_time_range_and_bad_events(
    real_bus: backbone.Backbone, real_url: str, environment: str, handlers: Path
) -> None:
    stream = real_bus.keys(URI).stream
    for n, entry in enumerate(("999-0", "1000-0", "1500-3")):
        await raw_packing(real_bus, entry, n)
    await real_bus.redis.xadd(stream, {"o": "packing"}, id="1700-0")  # no payload
    await real_bus.redis.xadd(stream, {"o": "order_placed"}, id="1800-0")
    for n, entry in enumerate(("2000-9", "2001-0"), start=3):
        await raw_packing(real_bus, entry, n)
    result = backbone_cli(
        *replay_cli(
            real_url,
            environment,
            "--handler",
            "replay_handlers:make",
            "--from",
            "1970-01-01T00:00:01Z",
            "--to",
            "1970-01-01T01:00:02+01:00",
        )
    )
    assert result.returncode == 0, result.stderr
    assert handled(handlers) == ["1000-0", "1500-3", "2000-9"]
    assert result.stdout.splitlines() == [
        f"replayed 3 events of {stream} (1 skipped: not handled, 1 undecodable), "
        "1000-0 to 2000-9"
    ]
    assert "replay skipped undecodable event 1700-0 (missing-payload)" in result.stderr


async def test_progress_on_a_terminal(
    real_bus: backbone.Backbone, real_url: str, environment: str, handlers: Path
) -> None:
    ids = await publish(real_bus, 4)
    code, shown = await asyncio.to_thread(
        backbone_on_terminal,
        *replay_cli(real_url, environment, "--handler", "replay_handlers:make"),
        columns=120,
    )
    assert code == 0, shown
    assert "replaying" in shown
    assert "/4" in shown
    assert f"replayed 4 events of {real_bus.keys(URI).stream}" in shown
    assert handled(handlers) == ids


async def test_a_failing_handler_is_one_line_naming_the_event(
    real_bus: backbone.Backbone,
    real_url: str,
    environment: str,
    handlers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = await publish(real_bus, 4)
    monkeypatch.setenv("REPLAY_FAIL_ON", "2")
    result = backbone_cli(
        *replay_cli(real_url, environment, "--handler", "replay_handlers:make")
    )
    assert_one_error_line(
        result,
        1,
        f"failed on event {ids[2]} (packing)",
        "RuntimeError: product 2 is cursed",
        f"resume from {ids[2]}",
    )
    assert handled(handlers) == ids[:2]
    broken = backbone_cli(
        *replay_cli(real_url, environment, "--handler", "replay_handlers:broken")
    )
    assert_one_error_line(
        broken, 1, "replay_handlers:broken failed to make the handler", "ValueError"
    )


async def test_ctrl_c_stops_quietly_with_the_id_to_resume_from(
    real_bus: backbone.Backbone,
    real_url: str,
    environment: str,
    handlers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = await publish(real_bus, 5)
    monkeypatch.setenv("REPLAY_BLOCK_ON", "2")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backbone",
        *replay_cli(real_url, environment, "--handler", "replay_handlers:make"),
        cwd=ROOT,
        stdout=PIPE,
        stderr=PIPE,
        env=command_env(),
    )
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
    assert line == b"blocked\n"
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 130, err
    assert err == b""
    assert out.decode().splitlines() == [
        f"interrupted: replayed 2 events of {real_bus.keys(URI).stream} (0 skipped: "
        f"not handled, 0 undecodable), {ids[0]} to {ids[1]}; resume with --from "
        f"{next_id(ids[1])}"
    ]
    assert handled(handlers) == ids[:2]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--from", "1-x"), 2, "--from '1-x' is not beginning, an entry id"),
        (("--to", "soon"), 2, "--to 'soon' is not end, an entry id"),
        (("--from", "2026-11-23T12:00:00"), 2, "has no UTC offset"),
        (("--from", f"{2**64}-0"), 2, "is not an entry id"),
        (("--from", "5-0", "--to", "4-0"), 2, "start 5-0 is after end 4-0"),
        (("--handler", "nowhere:make"), 2, "cannot import 'nowhere'"),
        (("--handler", "replay_handlers:absent"), 2, "has no attribute 'absent'"),
        (("--handler", "make"), 2, "is not module:attribute"),
    ],
)
def test_bad_arguments_are_one_line_before_redis(
    handlers: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    options = (
        args if "--handler" in args else ("--handler", "replay_handlers:make", *args)
    )
    result = backbone_cli(*replay_cli(down_url(), "dev", *options))
    assert_one_error_line(result, code, message)


def test_redis_down(handlers: Path) -> None:
    result = backbone_cli(
        *replay_cli(down_url(), "dev", "--handler", "replay_handlers:make")
    )
    assert_one_error_line(result, 1, "cannot reach Redis", "--redis-url")
