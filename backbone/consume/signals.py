"""One signal handling per event loop for every subscription that asks for it.

``loop.add_signal_handler`` keeps one handler per signal: each subscription
installing its own would leave all but the last one running (and the process
hanging) on SIGTERM. :class:`SignalStops` installs one handler per signal and
loop and stops every subscription registered for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .subscription import Subscription

__all__ = ["SignalStops"]


class SignalStops:
    """The signal handling of one event loop: a signal stops every subscription
    that asked for it. ``loop.add_signal_handler`` keeps one handler per signal,
    so each subscription installing its own would leave all but the last one
    running (and the process hanging) on SIGTERM."""

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SignalStops] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscriptions: dict[signal.Signals, weakref.WeakSet[Subscription]] = {}

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> SignalStops:
        found = cls._loops.get(loop)
        if found is None:
            found = cls._loops[loop] = cls(loop)
        return found

    def add(
        self, subscription: Subscription, signals: Iterable[signal.Signals]
    ) -> None:
        for sig in signals:
            members = self.subscriptions.get(sig)
            if members is None:
                members = self.subscriptions[sig] = weakref.WeakSet()
                self.loop.add_signal_handler(sig, self._received, sig)
            members.add(subscription)

    def _received(self, sig: signal.Signals) -> None:
        for subscription in list(self.subscriptions.get(sig, ())):
            subscription.on_signal(sig)

    @classmethod
    def forget(cls, subscription: Subscription) -> None:
        """SUBSCRIPTION has stopped: drop it; a signal nobody waits for any more
        gets its default behaviour back."""
        for stops in list(cls._loops.values()):
            for sig, members in list(stops.subscriptions.items()):
                members.discard(subscription)
                if not members:
                    del stops.subscriptions[sig]
                    with contextlib.suppress(Exception):
                        stops.loop.remove_signal_handler(sig)
