"""Consumer lag and events in flight, for the gauges: read when metrics are
collected, never on the event path.

*Lag* is what ``XINFO GROUPS`` reports as ``lag``: the entries of the stream not
yet delivered to the group (Redis 7+; Redis cannot count it for a while after
entries were deleted from the middle of the stream, and then it is not
reported). *In flight* is the subscription's own count of events read and not
yet finished and acknowledged (the window).

Metrics are collected synchronously (a Prometheus scrape thread, an
OpenTelemetry reader's thread), while Redis is reached from each subscription's
event loop: a collection on another thread asks that loop for ``XINFO GROUPS``
and waits for it (one command per stream, at most a second). A collection made
on the loop's own thread cannot wait for it: it reports the last values read and
asks for fresh ones for the next collection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from .hooks import running_subscriptions

if TYPE_CHECKING:
    from ..consume.state import SubscriptionState

__all__ = ["consumer_lags", "in_flight"]

log = logging.getLogger("backbone.telemetry")

WAIT: Final = 1.0

_lock = threading.Lock()
_last: dict[tuple[str, str], int] = {}
_refreshing: set[asyncio.AbstractEventLoop] = set()
_tasks: set[asyncio.Task[None]] = set()  # strong references while they run


def in_flight() -> list[tuple[tuple[str, str, str], int]]:
    """((stream, group, consumer), events in flight) per running subscription."""
    return [
        ((state.stream, state.group, state.consumer), state.window.in_flight)
        for state, _ in running_subscriptions()
    ]


def consumer_lags() -> list[tuple[tuple[str, str], int]]:
    """((stream, group), lag) per group that a running subscription consumes."""
    running = running_subscriptions()
    by_loop: dict[asyncio.AbstractEventLoop, list[SubscriptionState]] = {}
    for state, loop in running:
        by_loop.setdefault(loop, []).append(state)
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for loop, states in by_loop.items():
        if loop is here:
            _refresh_later(loop, states)
            continue
        try:
            future = asyncio.run_coroutine_threadsafe(_read(states), loop)
        except RuntimeError:  # the loop closed meanwhile
            continue
        try:
            future.result(WAIT)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
    wanted = {(state.stream, state.group) for state, _ in running}
    with _lock:
        return [(key, value) for key, value in _last.items() if key in wanted]


def _refresh_later(
    loop: asyncio.AbstractEventLoop, states: list[SubscriptionState]
) -> None:
    with _lock:
        if loop in _refreshing:
            return
        _refreshing.add(loop)
    task = loop.create_task(_read(states), name="backbone-telemetry:lag")
    _tasks.add(task)
    task.add_done_callback(lambda done: _done_refreshing(loop, done))


def _done_refreshing(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    _tasks.discard(task)
    with _lock:
        _refreshing.discard(loop)


async def _read(states: Iterable[SubscriptionState]) -> None:
    """XINFO GROUPS once per stream (and connection) of STATES; keep the lags."""
    streams: dict[tuple[int, str], tuple[SubscriptionState, set[str]]] = {}
    for state in states:
        key = (id(state.redis), state.stream)
        found = streams.get(key)
        if found is None:
            streams[key] = (state, {state.group})
        else:
            found[1].add(state.group)
    for state, groups in streams.values():
        try:
            async with asyncio.timeout(WAIT):
                infos = await state.redis.xinfo_groups(state.stream)
        except Exception as exc:
            log.debug("could not read the lag of %s: %s", state.stream, exc)
            continue
        for info in infos:
            name = info.get("name")
            text = name.decode(errors="replace") if isinstance(name, bytes) else name
            lag = info.get("lag")
            if text not in groups:
                continue
            with _lock:
                if isinstance(lag, int):
                    _last[(state.stream, text)] = lag
                else:
                    _last.pop((state.stream, text), None)


def forget() -> None:
    """Drop the values read so far (when telemetry is turned off)."""
    with _lock:
        _last.clear()
