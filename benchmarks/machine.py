"""What the figures were measured on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .server import BenchServer

__all__ = ["machine_info"]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def source_info() -> dict[str, Any]:
    """The commit the benchmarked code comes from, and whether backbone's own
    files differ from it (read-only git commands; None outside a checkout)."""
    root = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return {"commit": None, "uncommitted_changes": None}

    def run(*args: str) -> str | None:
        try:
            result = subprocess.run(
                [git, "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.rstrip() if result.returncode == 0 else None

    changed = run("status", "--porcelain", "--", "backbone", "codegen", "contracts")
    return {
        "commit": (run("rev-parse", "--short=12", "HEAD") or "").strip() or None,
        "uncommitted_changes": None
        if changed is None
        else [line[3:] for line in changed.splitlines()],
    }


def machine_info(server: BenchServer) -> dict[str, Any]:
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:  # pragma: no cover - very old redis-py
        HIREDIS_AVAILABLE = False
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "redis_server": server.info(),
        "packages": {
            name: _version(name)
            for name in (
                "backbone",
                "redis",
                "hiredis",
                "msgpack",
                "pydantic",
                "pydantic-core",
                "faststream",
                "rich",
                "uvloop",
            )
        },
        "event_loop": os.environ.get("BACKBONE_BENCH_LOOP", "asyncio"),
        "redis_py_uses_hiredis_parser": bool(HIREDIS_AVAILABLE),
        "source": source_info(),
    }
