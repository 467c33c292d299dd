"""`python -m benchmarks --quick` runs every section and writes a complete report.

A smoke test only: it checks that the harness works end to end and that every
figure is a number, never how large the numbers are.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "producer",
    "consumer",
    "latency",
    "memory",
    "store",
    "archive",
    "baselines",
    "sizes",
    "processes",
)

# Figures each section must report as numbers (others may be None when an
# optional tool, e.g. FastStream or redis-cli, is not installed).
REQUIRED = {
    "producer": (
        "backbone_single",
        "backbone_concurrent",
        "backbone_batch",
        "backbone_best",
        "hand_written",
    ),
    "consumer": (
        "backbone_default",
        "backbone_max_in_flight_1000",
        "backbone_best",
        "hand_written",
    ),
    "latency": ("p50_ms", "p99_ms", "p99_9_ms", "events_measured"),
    "memory": ("backbone_bytes_per_event", "inline_bytes_per_event", "ratio"),
    "store": (
        "load_full_seconds",
        "load_snapshot_seconds",
        "append_single_per_s",
        "publish_single_per_s",
        "append_batch_per_s",
        "publish_batch_per_s",
    ),
    "baselines": (
        "backbone_single",
        "backbone_single_p50_ms",
        "backbone_single_p99_ms",
        "raw_multi",
        "raw_multi_p99_ms",
        "asyncio_multi",
        "sync_multi",
        "backbone_batch",
        "raw_lua_batch",
        "backbone_concurrent",
        "raw_group_commit",
        "backbone_subscription_default",
        "raw_xreadgroup_hmget",
        "raw_lua_read",
    ),
    "sizes": (
        "backbone_batch_200",
        "raw_lua_batch_200",
        "backbone_batch_20000",
        "raw_lua_batch_20000",
        "backbone_subscription_20000",
        "raw_consumer_best_20000",
    ),
    "processes": (
        "backbone_x1",
        "backbone_x4",
        "raw_xreadgroup_hmget_x4",
        "raw_lua_read_x4",
    ),
    # None only without a reachable PostgreSQL (never under CI=true)
    "archive": (
        "sink_per_s",
        "row_by_row_per_s",
        "executemany_per_s",
        "write_executemany_per_s",
        "write_copy_per_s",
    ),
}


def is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@pytest.fixture
def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("CI=true but no redis-server binary: install redis-server")
        pytest.skip("no redis-server binary here (install redis-server to run this)")
    return binary


def test_quick_run_reports_every_section(
    redis_server_binary: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    report_json = tmp_path / "report.json"
    assert report_json.exists()
    assert (tmp_path / "report.md").exists()
    report = json.loads(report_json.read_text())

    assert report["settings"]["quick"] is True
    machine = report["machine"]
    assert is_number(machine["cpu_count"])
    assert machine["redis_server"]["redis_version"]
    assert machine["packages"]["redis"]

    assert set(report["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        section = report["sections"][name]
        assert section["rows"], name
        figures = section["figures"]
        if name == "archive" and figures["sink_per_s"] is None and not IN_CI:
            assert section["notes"], section  # says why (no PostgreSQL here)
            continue
        for key in REQUIRED[name]:
            assert is_number(figures.get(key)), (name, key, figures.get(key))
        for value in figures.values():
            assert value is None or is_number(value), (name, figures)
        for row in section["rows"]:
            if "events_per_s" in row and row["events_per_s"] is None:
                assert row["note"], (name, row)  # a variant that could not run
            elif "events_per_s" in row:
                assert is_number(row["events_per_s"]), (name, row)
        for comparison in section["comparisons"]:
            value = comparison["value"]
            assert value is None or is_number(value), (name, comparison)

    targets = report["targets"]
    assert len(targets) == 5
    for target in targets:
        if target["actual"] is None:
            # Only the server ceiling needs a tool besides redis-server.
            assert "ceiling" in target["name"], target
            assert shutil.which("redis-cli") is None, target
            continue
        assert is_number(target["actual"]), target
        assert isinstance(target["met"], bool), target

    # Backbone / the strongest hand-written baseline, one per goal.
    against = report["baseline_targets"]
    assert len(against) == 9
    for target in against:
        assert is_number(target["actual"]), target
        assert isinstance(target["met"], bool), target
