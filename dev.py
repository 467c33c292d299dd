#!/usr/bin/env python3
"""Set up a local virtual environment and run the project's commands in it.

    python3 dev.py demo [ARGS...]    run the shipment-tracking demo
    python3 dev.py test [ARGS...]    run the test suite (pytest ARGS)
    python3 dev.py check             ruff, mypy --strict and the codegen --check
    python3 dev.py bench [ARGS...]   run the benchmarks
    python3 dev.py cluster [--masters 3 --replicas 1]
                                     start a local Redis Cluster (redis-server
                                     processes on loopback ports) until Ctrl-C
    python3 dev.py mutants [ARGS...] seed faults one at a time in copies of the
                                     project and check that the tests catch each
                                     (tests/mutants.py: --list, --only NAME...,
                                     --update-docs)
    python3 dev.py shell CMD...      run any command inside the environment

Only python3 (3.11 or newer) is needed. The environment lives in .venv next to
this file and is rebuilt when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".backbone-installed"


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _wanted_stamp(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest}:{extras}"


def ensure_env(extras: str = "dev") -> Path:
    """Create .venv and install the project with EXTRAS when not done yet."""
    if sys.version_info < (3, 11):  # noqa: UP036 - say so clearly on an old Python
        sys.exit(
            f"backbone needs Python 3.11 or newer; this is {sys.version.split()[0]}"
        )
    python = _venv_python()
    stamp = _wanted_stamp(extras)
    if python.exists() and STAMP.exists() and STAMP.read_text() == stamp:
        return python
    if not python.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        except subprocess.CalledProcessError:
            shutil.rmtree(VENV, ignore_errors=True)
            sys.exit(
                "could not create a virtual environment; on Debian or Ubuntu "
                "install it with: apt-get install python3-venv"
            )
    print(f"installing backbone[{extras}] into {VENV}", flush=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[{extras}]"], check=True)
    STAMP.write_text(stamp)
    return python


def run_until_signalled(command: list[str]) -> int:
    """Run COMMAND in a process group of its own and pass Ctrl-C or SIGTERM on
    to it as one SIGTERM, then wait for it to clean up (the cluster stops its
    servers): a terminal's Ctrl-C would otherwise hit every server of the group
    at once, and this process would leave before its child was done."""
    child = subprocess.Popen(command, process_group=0)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {
        signum: signal.signal(signum, forward)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if command == "demo":
        python = ensure_env("dev")
        return subprocess.call([str(python), "-m", "backbone", "demo", *rest])
    if command == "test":
        python = ensure_env("dev")
        return subprocess.call([str(python), "-m", "pytest", *rest])
    if command == "check":
        python = ensure_env("dev")
        steps = [
            [str(python), "-m", "ruff", "check", "."],
            [str(python), "-m", "ruff", "format", "--check", "."],
            [str(python), "-m", "mypy", "backbone", "codegen", "contracts", "samples"],
            [str(python), "-m", "mypy", "tests/typed_contracts"],
            [str(python), "-m", "mypy", "benchmarks"],
            [
                str(python),
                "-m",
                "backbone",
                "codegen",
                "--check",
                "contracts",
                "tests/typed_contracts",
            ],
        ]
        for step in steps:
            print("$", " ".join(step[1:]), flush=True)
            code = subprocess.call(step)
            if code:
                return code
        return 0
    if command == "bench":
        python = ensure_env("dev")
        return subprocess.call([str(python), "-m", "benchmarks", *rest])
    if command == "cluster":
        python = ensure_env("dev")
        script = ROOT / "tests" / "cluster.py"
        return run_until_signalled([str(python), str(script), *rest])
    if command == "mutants":
        python = ensure_env("dev")
        return subprocess.call([str(python), str(ROOT / "tests" / "mutants.py"), *rest])
    if command == "shell":
        python = ensure_env("dev")
        env = dict(os.environ)
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(VENV)
        return subprocess.call(rest or [os.environ.get("SHELL", "sh")], env=env)
    print(f"unknown command {command!r}; run: python3 dev.py help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
