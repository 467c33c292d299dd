"""What the producer and the consumer look at on every event: one module global.

``active`` is None until :func:`backbone.telemetry.instrument` or
:func:`backbone.telemetry.serve_metrics` turns telemetry on; the hot paths read
it once per event (or per round trip) and do nothing more while it is None. This
module imports neither OpenTelemetry nor prometheus-client, so backbone runs
without the ``telemetry`` extra.

It also keeps the subscriptions running in this process (weakly), for the
consumer lag gauges, and gives the ``backbone`` logger its ``NullHandler``: a
library's log lines go nowhere until the application configures logging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..consume.state import SubscriptionState
    from .core import Telemetry

__all__ = ["active", "running_subscriptions", "unwatch", "watch"]

logging.getLogger("backbone").addHandler(logging.NullHandler())

active: Telemetry | None = None
"""The telemetry in force, or None (the default: nothing is traced or counted)."""

_lock = threading.Lock()
_running: weakref.WeakKeyDictionary[SubscriptionState, asyncio.AbstractEventLoop] = (
    weakref.WeakKeyDictionary()
)


def watch(state: SubscriptionState) -> None:
    """A subscription's workers started (on the running loop)."""
    loop = asyncio.get_running_loop()
    with _lock:
        _running[state] = loop


def unwatch(state: SubscriptionState) -> None:
    with _lock:
        _running.pop(state, None)


def running_subscriptions() -> list[
    tuple[SubscriptionState, asyncio.AbstractEventLoop]
]:
    """The subscriptions of this process that run and are not stopping, with the
    loop each runs on. Safe to call from any thread."""
    with _lock:
        items = list(_running.items())
    return [
        (state, loop)
        for state, loop in items
        if not state.stopping.is_set() and not loop.is_closed()
    ]
