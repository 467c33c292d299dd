"""`backbone ui` as a command: it serves, prints where (and the token), stops
quietly on SIGTERM, and says in one line what is wrong otherwise; backbone
itself never needs the ui extra."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_dlq_cli import assert_one_error_line, backbone_cli, command_env, down_url
from ui_helpers import need

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _ui_extra() -> None:
    need("starlette", "pip install 'backbone[ui]'")
    need("uvicorn", "pip install 'backbone[ui]'")


@pytest.fixture
def started(real_url: str, environment: str) -> Iterator[subprocess.Popen[str]]:
    """``backbone ui --port 0 --allow-actions`` running; stopped with SIGTERM."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backbone",
            "ui",
            "--port",
            "0",
            "--allow-actions",
            "--redis-url",
            real_url,
            "--environment",
            environment,
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_it_serves_prints_a_token_and_stops_quietly(
    started: subprocess.Popen[str],
) -> None:
    assert started.stdout is not None
    first = started.stdout.readline()
    assert first.startswith("backbone ui: http://127.0.0.1:"), first
    assert "actions on" in first
    address = first.split()[2]
    token_line = started.stdout.readline()
    assert token_line.startswith("action token: ")
    token = token_line.split()[-1]
    assert len(token) >= 32
    assert (
        started.stdout.readline().strip()
        == f"open with the token: {address}#token={token}"
    )

    with urllib.request.urlopen(address + "api/snapshot", timeout=10) as response:
        snapshot = json.load(response)
    assert snapshot["redis"]["up"] is True
    assert snapshot["actions"] is True

    started.send_signal(signal.SIGTERM)
    assert started.wait(timeout=20) == 0
    assert started.stderr is not None
    assert "Traceback" not in started.stderr.read()


def test_mistakes_and_an_unreachable_server_are_one_line() -> None:
    result = backbone_cli("ui", "--redis-url", down_url(), "--port", "0")
    assert_one_error_line(result, 1, "cannot reach Redis")
    result = backbone_cli("ui", "--allow-actions", "--token", "short", "--port", "0")
    assert_one_error_line(result, 2, "at least 16")


def test_a_port_in_use_is_one_line(real_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = backbone_cli("ui", "--redis-url", real_url, "--port", port)
    assert_one_error_line(result, 1, f"cannot listen on 127.0.0.1:{port}", "--port")


def test_without_the_extra_it_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "sys.modules['uvicorn'] = None\n"
        "import backbone\n"  # backbone itself needs neither
        "from backbone.cli import main\n"
        "sys.argv = ['backbone', 'ui']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=command_env(),
    )
    assert_one_error_line(result, 1, "pip install 'backbone[ui]'")


def test_only_loopback_hosts_are_quiet() -> None:
    from backbone.ui.auth import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.7", "example.com"]))
