"""`backbone demo` runs the whole shipment flow and exits 0, on both backends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def run_demo(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"}
    environ.update(env or {})
    environ["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "backbone", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


def check_output(result: subprocess.CompletedProcess[str], orders: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("order_placed", "packing", "on_delivery", "on_received"):
        assert out.count(f"  {step} ") == orders, step
    assert f"{orders} order(s) placed, {orders} received (all received)" in out


def test_demo_on_embedded_redis() -> None:
    result = run_demo("--orders", "4")
    check_output(result, 4)
    assert "embedded Redis" in result.stdout


def test_demo_beside_a_projects_own_contracts_package(tmp_path: Path) -> None:
    """`python -m backbone demo` from a project with its own `contracts` (first on
    sys.path) uses the demo's contract modules, never the project's."""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "__init__.py").write_text("")
    for name in ("shipment_tracking.py", "shipment_tracking_gen.py"):
        (tmp_path / "contracts" / name).write_text(
            "raise RuntimeError('the project\\'s own module was imported')\n"
        )
    check_output(run_demo("--orders", "2", cwd=tmp_path), 2)


def test_demo_on_real_redis_via_option_and_env(real_url: str) -> None:
    result = run_demo("--orders", "3", "--redis-url", real_url)
    check_output(result, 3)
    assert real_url in result.stdout
    check_output(run_demo("--orders", "2", env={"BACKBONE_REDIS_URL": real_url}), 2)
    # The demo removes its stream afterwards.
    client = redis.Redis.from_url(real_url)
    assert list(client.scan_iter(match="bb:{demo:*")) == []
    client.close()


@pytest.mark.parametrize("backend", ["fake", "real"])
def test_the_accounts_sample_keeps_every_balance_right(
    backend: str, real_redis_url: str | None
) -> None:
    """Deposits and withdrawals race on each account; every command either
    applies on the latest balance or is refused, and the balances projection
    agrees with each aggregate."""
    args = ["--sample", "accounts", "--orders", "3"]
    if backend == "real":
        if real_redis_url is None:
            pytest.skip("no redis-server binary here")
        args += ["--redis-url", real_redis_url]
    result = run_demo(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "every balance agrees" in out
    rows = [line for line in out.splitlines() if line.startswith("│ acct-")]
    assert len(rows) == 3
    for row in rows:
        _account, version, balance, model, agrees = (
            cell.strip() for cell in row.strip("│").split("│")
        )
        assert agrees == "yes"
        assert balance == model
        assert float(balance) >= 0
        assert int(version) >= 1
    match = re.search(r"(\d+) command\(s\), (\d+) refused", out)
    assert match is not None
    assert int(match[1]) == 3 * 20


def test_an_unknown_sample_is_one_line() -> None:
    result = run_demo("--sample", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --sample 'nope' is not one of: shipments, accounts"
    ]
