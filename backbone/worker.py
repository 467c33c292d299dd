"""Running subscriptions as a service: the engine behind ``backbone run``.

A service names its subscriptions as *factories*: plain functions that take the
process's :class:`Backbone` connection and return a subscription (or several, or
an awaitable of either), made with the generated ``subscribe_<contract>``
functions, so each has its own URI, group and options::

    def inventory(bus: backbone.Backbone) -> backbone.Subscription:
        return subscribe_shipment_tracking(
            bus, "orders", Inventory(), group="inventory"
        )

``backbone run myservice.workers:inventory myservice.workers:billing`` imports
them, connects once, starts every subscription and stops them all, gracefully,
on SIGTERM or SIGINT. With ``--workers N`` a supervisor runs N such processes
(each its own consumer in every group), forwards the signals, and restarts a
process that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .connection import Backbone
from .consume import Subscription
from .errors import ConfigurationError

__all__ = ["Factory", "WorkerSettings", "load_factory", "run_worker", "supervise"]

log = logging.getLogger("backbone.worker")

Made = Subscription | Iterable[Subscription]
Factory = Callable[[Backbone], Made | Awaitable[Made]]

_RESTART_DELAY = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What one worker process runs, and against which Redis."""

    targets: tuple[str, ...]
    redis_url: str
    environment: str = "dev"
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"


def load_factory(target: str) -> Factory:
    """Import TARGET, ``module:attribute``, a subscription factory."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"{target!r} is not module:attribute (for example "
            "myservice.workers:inventory)"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would, for the user's code
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"cannot import {module_name!r} for {target!r}: no such module "
                f"(run from the directory that holds it, or install it)"
            ) from None
        raise
    found: object = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr!r} (for {target!r})"
            ) from None
    if not callable(found):
        raise ConfigurationError(
            f"{target!r} is a {type(found).__name__}, not a function taking a "
            "backbone.Backbone and returning subscriptions"
        )
    return found


async def _subscriptions(factory: Factory, bus: Backbone, target: str) -> list[Any]:
    made: Any = factory(bus)
    if inspect.isawaitable(made):
        made = await made
    items = [made] if isinstance(made, Subscription) else list(made or ())
    for item in items:
        if not isinstance(item, Subscription):
            raise ConfigurationError(
                f"{target} returned a {type(item).__name__}; a factory returns the "
                "subscription(s) made by subscribe_<contract>(...)"
            )
    if not items:
        raise ConfigurationError(f"{target} returned no subscription")
    return items


async def run_worker(settings: WorkerSettings) -> int:
    """Run one worker process until a signal (exit code 0) or until one of its
    subscriptions fails (1)."""
    factories = [(target, load_factory(target)) for target in settings.targets]
    async with Backbone(settings.redis_url, environment=settings.environment) as bus:
        if settings.metrics_port is not None:
            from .telemetry import serve_metrics

            server = serve_metrics(settings.metrics_port, settings.metrics_addr)
            log.warning("worker %d: metrics at %s", os.getpid(), server.url)
        subscriptions: list[Subscription] = []
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stopping.set)
        try:
            for target, factory in factories:
                for sub in await _subscriptions(factory, bus, target):
                    subscriptions.append(await sub.start())
            log.warning(
                "worker %d ready: %s",
                os.getpid(),
                ", ".join(repr(sub) for sub in subscriptions),
            )
            failed = await _until_stop_or_failure(subscriptions, stopping)
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            await asyncio.gather(
                *(sub.stop() for sub in subscriptions), return_exceptions=True
            )
        log.warning("worker %d stopped", os.getpid())
        return 1 if failed else 0


async def _until_stop_or_failure(
    subscriptions: Sequence[Subscription], stopping: asyncio.Event
) -> bool:
    """Wait for a stop signal or the end of any subscription; True when one
    ended by itself (it failed: a subscription runs until stopped)."""
    signalled: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    ends: list[asyncio.Future[Any]] = [sub.completion for sub in subscriptions]
    try:
        done, _ = await asyncio.wait(
            [signalled, *ends], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        signalled.cancel()
        for end in ends:
            end.cancel()
    if signalled in done:
        return False
    for sub, end in zip(subscriptions, ends, strict=True):
        if end in done:
            error = end.exception() if not end.cancelled() else None
            log.error("%s ended (%s); stopping the worker", sub, error or "stopped")
    return True


def supervise(command: Sequence[str], workers: int) -> int:
    """Run WORKERS processes of COMMAND (a single-worker ``backbone run``),
    forward SIGTERM/SIGINT to them, restart one that dies, and return when all
    have stopped after a signal (0), or the highest exit code when they could
    not be kept running."""
    stopping = False
    processes: dict[int, subprocess.Popen[bytes]] = {}

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    codes: list[int] = []
    try:
        for index in range(workers):
            process = _spawn(command, index)
            processes[process.pid] = process
        log.warning("supervising %d worker process(es)", workers)
        indexes = {pid: i for i, pid in enumerate(processes)}
        while any(p.returncode is None for p in processes.values()):
            try:
                pid, status = os.waitpid(-1, 0)  # retried after signal handlers
            except ChildProcessError:
                break
            ended = processes.get(pid)
            if ended is None:
                continue
            ended.returncode = os.waitstatus_to_exitcode(status)
            codes.append(ended.returncode)
            if stopping:
                continue
            log.error(
                "worker process %d exited with %d; restarting it in %.0fs",
                pid,
                ended.returncode,
                _RESTART_DELAY,
            )
            time.sleep(_RESTART_DELAY)
            if stopping:
                continue
            index = indexes.pop(pid)
            del processes[pid]
            fresh = _spawn(command, index)
            processes[fresh.pid] = fresh
            indexes[fresh.pid] = index
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        return 0
    return max(codes, default=0)


def _spawn(command: Sequence[str], index: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BACKBONE_WORKER_INDEX=str(index))
    return subprocess.Popen(list(command), env=env)
