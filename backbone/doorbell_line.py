"""The doorbell's connections (see :mod:`backbone.doorbell`): which node serves
each bell, and one connection per node that stays subscribed to the bells
assigned to it.

A connection of its own per node, not redis-py's ``PubSub``: the doorbell must
know which subscriptions the node has confirmed (until then its readers poll),
tell a MOVED refusal or a ``sunsubscribe`` the server sent by itself (a slot
moved away) from its own replies, and notice a connection that went silent.
Replies come in the order of the commands; messages come in between.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from typing import TYPE_CHECKING, Any, Final, cast

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from .events import as_text

if TYPE_CHECKING:
    from .connection import Backbone
    from .doorbell import Doorbell

__all__ = ["CLIENT_NAME", "NodeLine", "Topology"]

log = logging.getLogger("backbone.doorbell")

CLIENT_NAME: Final = "backbone-doorbell"
"""The client name of the doorbell's connections (``CLIENT LIST``)."""
_SERVER: Final = "server"  # the one node of a single server


class Topology:
    """Which node serves a bell, and a fresh connection to a node."""

    def __init__(self, bus: Backbone) -> None:
        self.bus = bus
        self._ready = False

    @property
    def cluster(self) -> RedisCluster | None:
        return cast(RedisCluster, self.bus.redis) if self.bus.cluster else None

    async def refresh(self, failed: str | None) -> None:
        """Learn the slot map again (a cluster's; nothing on a single server)."""
        cluster = self.cluster
        if cluster is None:
            return
        if not self._ready:
            await cluster.initialize()
            self._ready = True
        else:
            await cluster.nodes_manager.initialize(last_failed_node_name=failed)

    def node_of(self, channel: str) -> str | None:
        """The node serving CHANNEL's slot; None while the map does not say."""
        cluster = self.cluster
        if cluster is None:
            return _SERVER
        if not self._ready:
            return None
        try:
            node = cluster.get_node_from_key(channel)
        except rex.RedisError:  # slot not covered (the cluster is failing over)
            return None
        return None if node is None else str(node.name)

    def connection(self, name: str) -> aioredis.Connection:
        """A new connection to node NAME, made as the client makes its own
        (address, credentials, TLS, timeouts), named :data:`CLIENT_NAME` and
        speaking RESP2, whose subscription messages :class:`NodeLine` reads."""
        cluster = self.cluster
        if cluster is None:
            pool = self.bus.redis.connection_pool
            kind: Any = pool.connection_class
            kwargs = dict(pool.connection_kwargs)
        else:
            node = cluster.get_node(node_name=name)
            if node is None:
                raise rex.ConnectionError(f"{name} is no longer a node of the cluster")
            kind, kwargs = node.connection_class, dict(node.connection_kwargs)
        kwargs.update(client_name=CLIENT_NAME, protocol=2)
        return cast(aioredis.Connection, kind(**kwargs))


class NodeLine:
    """The doorbell's connection to one node: subscribes there to the bells the
    doorbell assigns to it, reports what it hears, reconnects when lost."""

    def __init__(self, doorbell: Doorbell, node: str) -> None:
        self.doorbell = doorbell
        self.node = node
        self.channels: set[str] = set()
        self.connected = False
        self._changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{CLIENT_NAME} {node}"
        )

    def assign(self, channel: str) -> None:
        self.channels.add(channel)
        self._changed.set()

    def release(self, channel: str) -> None:
        self.channels.discard(channel)
        self._changed.set()

    async def _run(self) -> None:
        doorbell = self.doorbell
        failures = 0
        while True:
            connection: aioredis.Connection | None = None
            try:
                connection = doorbell.topology.connection(self.node)
                await connection.connect()  # type: ignore[no-untyped-call]
                self.connected = True
                if failures:
                    log.info("doorbell: connected to %s again", self.node)
                failures = 0
                await self._serve(connection)
            except Exception as exc:  # lost: every error is handled the same way
                if failures == 0:
                    log.warning(
                        "doorbell: lost %s (%s: %s); its readers poll every %s s "
                        "until it is subscribed again",
                        self.node,
                        type(exc).__name__,
                        exc,
                        doorbell.poll,
                    )
                failures += 1
            finally:
                self.connected = False
                if connection is not None:
                    await connection.disconnect(nowait=True)
                doorbell.lost(self)
            await asyncio.sleep(min(doorbell.poll, 0.05 * 2 ** min(failures, 10)))

    async def _serve(self, connection: aioredis.Connection) -> None:
        """Keep this connection subscribed to exactly ``channels`` until it fails.

        Replies come in the order of the commands (``pending``); messages and the
        server's own ``sunsubscribe`` (a slot moved away) come in between.
        """
        doorbell = self.doorbell
        loop = asyncio.get_running_loop()
        pending: collections.deque[tuple[str, str]] = collections.deque()
        live: set[str] = set()  # subscribed, or asked to be
        heard, pinged = loop.time(), math.inf
        read = _read(connection)
        try:
            while True:
                self._changed.clear()
                for channel in sorted(self.channels - live):
                    await connection.send_command(
                        "SSUBSCRIBE", channel, check_health=False
                    )
                    pending.append(("ssubscribe", channel))
                    live.add(channel)
                for channel in sorted(live - self.channels):
                    await connection.send_command(
                        "SUNSUBSCRIBE", channel, check_health=False
                    )
                    pending.append(("sunsubscribe", channel))
                    live.discard(channel)
                now = loop.time()
                if now - pinged > doorbell.reply_timeout:
                    raise rex.TimeoutError(
                        f"no reply to PING within {doorbell.reply_timeout} s"
                    )
                if pinged == math.inf and now - heard >= doorbell.heartbeat:
                    await connection.send_command("PING", check_health=False)
                    pending.append(("pong", ""))
                    pinged = now
                if pinged == math.inf:
                    due = heard + doorbell.heartbeat
                else:
                    due = pinged + doorbell.reply_timeout
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait(
                        (read, changed),
                        timeout=max(due - now, 0.001),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    changed.cancel()
                if not read.done():
                    continue
                try:
                    reply: Any = read.result()
                except rex.ResponseError as exc:
                    reply = exc
                read = _read(connection)
                heard = loop.time()
                if self._heard(reply, pending, live):
                    pinged = math.inf
        finally:
            read.cancel()
            read.add_done_callback(_discard_outcome)

    def _heard(
        self,
        reply: Any,
        pending: collections.deque[tuple[str, str]],
        live: set[str],
    ) -> bool:
        """Act on one reply or message; True for the answer to a PING."""
        doorbell = self.doorbell
        if isinstance(reply, rex.ResponseError):
            kind, channel = pending.popleft() if pending else ("", "")
            if kind == "ssubscribe":
                live.discard(channel)
                doorbell.moved(self, channel, reply)
                return False
            raise reply
        if isinstance(reply, (bytes, str)):  # PONG while subscribed to nothing
            reply = [reply]
        if not isinstance(reply, list) or not reply:
            raise rex.ResponseError(f"unexpected reply on a subscription: {reply!r}")
        kind = as_text(reply[0]).lower()
        channel = as_text(reply[1]) if len(reply) > 1 and reply[1] else ""
        expected = pending[0] if pending else None
        if kind == "smessage":
            doorbell.ring(channel)
        elif kind == "ssubscribe":
            if expected == (kind, channel):
                pending.popleft()
            doorbell.confirmed(self, channel)
        elif kind == "sunsubscribe":
            if expected == (kind, channel):
                pending.popleft()
            elif channel in live:  # dropped by the server: the slot moved away
                live.discard(channel)
                doorbell.moved(self, channel, None)
        elif kind == "pong":
            if expected is not None and expected[0] == "pong":
                pending.popleft()
            return True
        return False


def _read(connection: aioredis.Connection) -> asyncio.Future[Any]:
    return asyncio.ensure_future(connection.read_response(timeout=math.inf))


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
