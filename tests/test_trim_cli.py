"""`backbone trim` against a real Redis: what it removes and prints, what held
entries back, and its one-line errors."""

from __future__ import annotations

import json
import subprocess

import backbone
from test_dlq_cli import (
    assert_one_error_line,
    backbone_cli,
    dead_letter,
    down_url,
    lines_with,
)
from test_retention import URI, entry_ids, payload_keys, publish


async def test_trim_prints_what_it_removed_and_what_held_entries_back(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    ids = await publish(real_bus, 10)
    stream = real_bus.keys(URI).stream
    await real_bus.redis.xgroup_create(stream, "billing", id=ids[5])
    dead = [(await dead_letter(real_bus, g))[0].id for g in ("one", "two", "three")]

    dry = backbone_cli(
        "trim", URI, "--max-len", "0", "--dry-run",
        "--redis-url", real_url, "--environment", environment,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert lines_with(dry.stdout, f"{URI}: would remove 6 entries", ids[6])
    assert lines_with(dry.stdout, "held back by group billing from", ids[6], "unread")
    assert len(await entry_ids(real_bus)) == 13

    done = backbone_cli(
        "trim", URI, "--max-len", "0", "--dead-letters-max-len", "1",
        "--redis-url", real_url, "--environment", environment,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert lines_with(done.stdout, f"{URI}: removed 6 entries and 6 payload hashes")
    assert lines_with(done.stdout, "held back by group billing from " + ids[6])
    assert lines_with(
        done.stdout, f"{URI} dead letters: removed 2 dead letters and 2 payload copies"
    )
    assert await entry_ids(real_bus) == ids[6:] + dead
    assert len(await payload_keys(real_bus)) == 7
    assert await real_bus.redis.xlen(real_bus.keys(URI).dead_letters) == 1

    forced = backbone_cli(
        "trim", URI, "--max-age", "1d", "--max-len", "0", "--force", "--json",
        "--redis-url", real_url, "--environment", environment,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    [report] = [json.loads(line) for line in forced.stdout.splitlines()]
    assert (report["uri"], report["removed"], report["payloads_removed"]) == (
        URI,
        7,
        7,
    )
    assert [hold["name"] for hold in report["forced"]] == ["billing"]
    assert await entry_ids(real_bus) == []
    assert await payload_keys(real_bus) == set()


async def test_mistakes_are_one_line_and_a_non_zero_exit(
    real_bus: backbone.Backbone, real_url: str, environment: str
) -> None:
    await publish(real_bus, 1)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return backbone_cli(
            "trim", *args, "--redis-url", real_url, "--environment", environment
        )

    assert_one_error_line(run("--max-len", "1"), 2, "name the stream")
    assert_one_error_line(run(URI), 2, "give a bound", "--max-age")
    assert_one_error_line(run(URI, "--max-age", "7x"), 2, "'7x'", "12h, 7d")
    assert_one_error_line(run(URI, "--max-age", "0s"), 2, "longer than 0")
    assert_one_error_line(run(URI, "--max-len", "-5"), 2, "--max-len -5", "0 or more")
    assert_one_error_line(run(URI, "--max-len", "ten"), 2, "'ten'", "whole number")
    assert_one_error_line(
        run(URI, "--dead-letters-max-age", "soon"), 2, "--dead-letters-max-age"
    )
    assert_one_error_line(run("a b", "--max-len", "1"), 2, "uri 'a b'")
    assert_one_error_line(
        run(URI, "unknown.stream", "--max-len", "0"),
        1,
        "no stream 'unknown.stream'",
        "backbone inspect",
    )
    assert len(await entry_ids(real_bus)) == 1, "a mistake trims nothing"
    unreachable = backbone_cli("trim", URI, "--max-len", "0", "--redis-url", down_url())
    assert_one_error_line(unreachable, 1, "cannot reach Redis")
