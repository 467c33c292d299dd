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
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .connection import Backbone
from .consume import Subscription
from .errors import BackboneError, ConfigurationError

__all__ = [
    "START_FAILED",
    "Factory",
    "StartError",
    "WorkerSettings",
    "load_factory",
    "run_worker",
    "supervise",
]

log = logging.getLogger("backbone.worker")

Made = Subscription | Iterable[Subscription]
Factory = Callable[[Backbone], Made | Awaitable[Made]]

_RESTART_DELAY = 1.0
_STABLE_AFTER = 60.0
START_FAILED = 3
"""Exit status of a worker whose subscriptions could not start."""
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
    found = load_object(target)
    if not callable(found):
        raise ConfigurationError(
            f"{target!r} is {_article(type(found).__name__)}, not a function taking a "
            "backbone.Backbone and returning subscriptions"
        )
    return found


def load_object(target: str) -> object:
    """Import TARGET, ``module:attribute``, and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"{target!r} is not module:attribute (for example "
            "myservice.workers:inventory)"
        )
    if module_name.endswith(".py") or not all(
        part.isidentifier() for part in module_name.split(".")
    ):
        hint = module_name.removesuffix(".py").replace("/", ".").strip(".")
        raise ConfigurationError(
            f"{module_name!r} in {target!r} is not a module name; name the module "
            f"as Python imports it (for example {hint}:{attr}), from the directory "
            "that holds it"
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
        raise ConfigurationError(
            f"importing {module_name!r} for {target!r} failed: "
            f"{type(exc).__name__}: {exc}{_where(exc)}"
        ) from None
    except Exception as exc:
        raise ConfigurationError(
            f"importing {module_name!r} for {target!r} failed: "
            f"{type(exc).__name__}: {exc}{_where(exc)}"
        ) from None
    found: object = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr!r} (for {target!r})"
            ) from None
    return found


class StartError(ConfigurationError):
    """A worker could not start its subscriptions (a factory failed, or returned
    something else than subscriptions): restarting it would fail again."""


def _where(exc: BaseException) -> str:
    """` (file:line)` of the innermost frame of EXC's traceback, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


async def _subscriptions(factory: Factory, bus: Backbone, target: str) -> list[Any]:
    try:
        made: Any = factory(bus)
        if inspect.isawaitable(made):
            made = await made
    except BackboneError as exc:
        raise StartError(f"{target}: {exc}") from None
    except Exception as exc:
        raise StartError(
            f"{target} raised {type(exc).__name__}: {exc}{_where(exc)}"
        ) from None
    if isinstance(made, Subscription):
        items: list[Any] = [made]
    elif isinstance(made, Iterable) and not isinstance(made, (str, bytes)):
        items = list(made)
    else:
        items = [made]
    for item in items:
        if not isinstance(item, Subscription):
            raise StartError(
                f"{target} returned {_article(type(item).__name__)}; a factory "
                "returns the subscription(s) made by subscribe_<contract>(...)"
            )
    if not items:
        raise StartError(f"{target} returned no subscription")
    return items


def _article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


async def run_worker(settings: WorkerSettings) -> int:
    """Run one worker process until a signal (exit code 0), until one of its
    subscriptions fails (1). A second signal during the graceful stop ends the
    process at once (130): events being handled stay pending for the group.
    Raises :class:`StartError` when a factory cannot make its subscriptions."""
    factories = [(target, load_factory(target)) for target in settings.targets]
    async with Backbone(settings.redis_url, environment=settings.environment) as bus:
        if settings.metrics_port is not None:
            from .telemetry import serve_metrics

            server = serve_metrics(settings.metrics_port, settings.metrics_addr)
            log.warning("worker %d: metrics at %s", os.getpid(), server.url)
        subscriptions: list[Subscription] = []
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if not stopping.is_set():
                log.warning(
                    "worker %d: %s received, stopping (handlers finish first; "
                    "send it again to stop at once)",
                    os.getpid(),
                    sig.name,
                )
                stopping.set()
                return
            log.warning(
                "worker %d: %s received again, stopping at once; events being "
                "handled stay pending for the group",
                os.getpid(),
                sig.name,
            )
            logging.shutdown()
            os._exit(130)

        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
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
            # Stopped (or a factory failed): stop what started, signals still ours.
            await asyncio.gather(
                *(sub.stop() for sub in subscriptions), return_exceptions=True
            )
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
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
    forward SIGTERM/SIGINT to them, and restart one that dies, with a growing
    delay. Returns when all have stopped: after a signal, 0 when each stopped
    gracefully (else the highest exit status); at once, with its status, when a
    worker could not start (:data:`START_FAILED`: restarting would fail again).
    """
    stopping = False
    processes: dict[int, subprocess.Popen[bytes]] = {}

    def stop_all() -> None:
        for process in processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    after_stop: list[int] = []
    gave_up: int | None = None
    delay = _RESTART_DELAY
    try:
        started: dict[int, float] = {}
        indexes: dict[int, int] = {}
        for index in range(workers):
            process = _spawn(command, index)
            processes[process.pid] = process
            started[process.pid] = time.monotonic()
            indexes[process.pid] = index
        log.warning("supervising %d worker process(es)", workers)
        while any(p.returncode is None for p in processes.values()):
            try:
                pid, status = os.waitpid(-1, 0)  # retried after signal handlers
            except ChildProcessError:
                break
            ended = processes.get(pid)
            if ended is None:
                continue
            code = ended.returncode = _exit_status(status)
            if stopping:
                after_stop.append(code)
                continue
            if code == START_FAILED:
                log.error(
                    "worker process %d could not start (exit %d); stopping the "
                    "others: starting again would fail the same way",
                    pid,
                    code,
                )
                gave_up = code
                stopping = True
                stop_all()
                continue
            lived = time.monotonic() - started.pop(pid)
            delay = _RESTART_DELAY if lived > _STABLE_AFTER else min(delay * 2, 30.0)
            log.error(
                "worker process %d exited with %d; restarting it in %.0fs",
                pid,
                code,
                delay,
            )
            time.sleep(delay)
            if stopping:
                continue
            index = indexes.pop(pid)
            del processes[pid]
            fresh = _spawn(command, index)
            processes[fresh.pid] = fresh
            started[fresh.pid] = time.monotonic()
            indexes[fresh.pid] = index
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if gave_up is not None:
        return gave_up
    return max(after_stop, default=0)


def _exit_status(status: int) -> int:
    """A wait status as a shell would report it (128 + N for signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _spawn(command: Sequence[str], index: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BACKBONE_WORKER_INDEX=str(index))
    return subprocess.Popen(list(command), env=env)
