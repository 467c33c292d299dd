"""A direct, pipelined connection for the write path.

A producer's round trip through redis-py's asyncio client costs more client CPU
than the write itself: a connection taken from and given back to the pool, a
timer armed and cancelled per command (``asyncio.timeout``), the reply read by a
coroutine that polls the socket. For one ``await producer.op(...)`` at a time
that is most of the ~170 µs a call took. This connection is what the strongest
hand-written client does instead:

* commands are packed by hiredis and written at once (``transport.write``, no
  await); replies are parsed by a ``hiredis.Reader`` fed from the protocol's
  ``data_received`` and handed to the waiting callers in order, so any number of
  commands can be in flight on one connection (RESP answers in order);
* there is no timer per command: one watchdog is armed while replies are
  outstanding and fires at the oldest request's deadline (the command timeout,
  or the caller's own deadline when nearer); a request past it closes the
  connection, failing every outstanding request with a timeout, exactly as a
  lost connection would;
* a lost or timed-out connection is reconnected by the next call.

It never retries anything by itself: an error or a timeout reaches the caller,
who knows whether a command may be sent again (publish.lua's batch record makes
the producer's retries safe). Used for plain ``redis://`` and ``unix://`` URLs;
TLS, a Redis Cluster and the embedded server keep redis-py's client.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any, Final, cast

import hiredis
import redis.exceptions as rex
from redis._parsers.base import BaseParser
from redis.connection import parse_url

from .clients import refuse_cluster_node

__all__ = ["DirectConnection", "direct_for"]

# redis-py's mapping of an error reply to its exception (NOSCRIPT ->
# NoScriptError, READONLY -> ReadOnlyError...), so callers see the same classes.
_parse_error: Callable[[str], rex.ResponseError] = BaseParser.parse_error


class _Request:
    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(
        self, future: asyncio.Future[Any], deadline: float, count: int = 0
    ) -> None:
        self.future = future
        self.deadline = deadline
        # A batch (``call_many``): COUNT replies gathered into one list.
        self.count = count
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    """Feeds replies to the oldest waiting request; fails them all on loss."""

    def __init__(self, owner: DirectConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[_Request] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport instance:
        # uvloop's are not subclasses of it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(rex.ConnectionError(f"protocol error from Redis: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # pragma: no cover - a reply nobody asked for
                self.fail(rex.ConnectionError("unexpected reply from Redis"))
                return
            if waiting[0].count:
                batch = waiting[0]
                replies = batch.replies
                if isinstance(reply, hiredis.ReplyError):
                    reply = _parse_error(str(reply))
                replies.append(reply)
                if len(replies) < batch.count:
                    continue
                waiting.popleft()
                if not batch.future.done():
                    batch.future.set_result(replies)
                continue
            future = waiting.popleft().future
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_parse_error(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            rex.ConnectionError(
                f"connection to Redis lost: {exc}" if exc else "connection closed"
            )
        )

    def fail(self, error: BaseException) -> None:
        if self.lost is None:
            self.lost = error
        self.owner._lost(self)
        waiting, self.waiting = self.waiting, collections.deque()
        for request in waiting:
            if not request.future.done():
                request.future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


class DirectConnection:
    """One connection to a single Redis server, commands pipelined (see the
    module documentation)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        client_name: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.username, self.password, self.db = username, password, db
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._closed = False
        self._scripts: dict[str, str] = {}

    def preload(self, source: str) -> None:
        """Load Lua SOURCE on every new connection, with the handshake: the
        first calls on a fresh server then find it instead of failing with
        NOSCRIPT, each loading it and sending again in its own order."""
        self._scripts[source] = source

    async def call(self, *args: Any, deadline: float | None = None) -> Any:
        """Send one command and wait for its reply (error replies raise their
        redis-py exception). DEADLINE (``time.monotonic()``) bounds the wait
        when it is nearer than the command timeout."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(protocol, future, 0, hiredis.pack_command(args), deadline)
        return await future

    async def call_many(
        self, commands: list[tuple[Any, ...]], deadline: float | None = None
    ) -> list[Any]:
        """Send COMMANDS in one write, on one connection (so ``WAIT`` after a
        write counts that write); their replies or errors, in order. One waiting
        request stands for the whole batch, however many commands it holds (a
        consumer's payload reads are hundreds)."""
        if not commands:
            return []
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        pack = hiredis.pack_command
        payload = b"".join([pack(c) for c in commands])
        self._send(protocol, future, len(commands), payload, deadline)
        return await future

    def _send(
        self,
        protocol: _Protocol,
        future: asyncio.Future[Any],
        count: int,
        payload: bytes,
        deadline: float | None,
    ) -> None:
        """Queue the request FUTURE (COUNT replies gathered into a list, or 0 for
        one reply) and write PAYLOAD."""
        limit = time.monotonic() + self.command_timeout
        if deadline is not None and deadline < limit:
            limit = deadline
        protocol.waiting.append(_Request(future, limit, count))
        assert protocol.transport is not None
        protocol.transport.write(payload)
        # One timer for many requests: an armed watchdog stays armed (it finds
        # nothing late, or re-arms for the oldest request left), so a busy
        # connection pays one timer per command timeout, not one per command.
        if self._watchdog is None or limit < self._armed_at:
            self._arm(protocol, limit)

    def _arm(self, protocol: _Protocol, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._armed_at = when
        delay = max(when - time.monotonic(), 0.0)
        self._watchdog = loop.call_later(delay, self._check, protocol)

    def _check(self, protocol: _Protocol) -> None:
        """The watchdog: fail the connection when its oldest request is late."""
        self._watchdog = None
        waiting = protocol.waiting
        if not waiting or protocol.lost is not None:
            return
        now = time.monotonic()
        oldest = min(request.deadline for request in waiting)
        if oldest <= now:
            protocol.fail(
                rex.TimeoutError(
                    f"Redis at {self._where()} did not answer in time (within "
                    f"command_timeout, {self.command_timeout:g}s, or the caller's "
                    "nearer deadline)"
                )
            )
            return
        self._arm(protocol, oldest)

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise rex.ConnectionError("connection closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            current = self._protocol
            if current is not None and current.lost is None:
                return current
            loop = asyncio.get_running_loop()
            protocol = _Protocol(self)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    if self.path is not None:
                        await loop.create_unix_connection(lambda: protocol, self.path)
                    else:
                        await loop.create_connection(
                            lambda: protocol, self.host, self.port
                        )
            except TimeoutError:
                raise rex.TimeoutError(
                    f"could not connect to Redis at {self._where()} within "
                    f"{self.connect_timeout:g}s"
                ) from None
            except OSError as exc:
                raise rex.ConnectionError(
                    f"could not connect to Redis at {self._where()}: {exc}"
                ) from None
            try:
                await self._handshake(protocol)
            except BaseException:
                protocol.fail(rex.ConnectionError("handshake failed"))
                raise
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        commands += [("SCRIPT", "LOAD", source) for source in self._scripts]
        commands.append(("INFO", "cluster"))
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        payload = b"".join([hiredis.pack_command(c) for c in commands])
        self._send(protocol, future, len(commands), payload, None)
        replies = await future
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply  # a refused AUTH or SELECT
        refuse_cluster_node(replies[-1], self._where())

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _where(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    async def close(self) -> None:
        self._closed = True
        protocol = self._protocol
        if protocol is not None:
            protocol.fail(rex.ConnectionError("connection closed"))


_SCHEMES: Final = ("redis://", "unix://")


def direct_for(
    url: str, *, client_name: str | None, connect_timeout: float, command_timeout: float
) -> DirectConnection | None:
    """The direct connection for URL, or None where redis-py's client stays the
    only one (TLS, a cluster, the embedded server, options it cannot honour)."""
    if not url.startswith(_SCHEMES):
        return None
    try:
        parsed: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        return None
    known = {"host", "port", "path", "username", "password", "db", "connection_class"}
    if set(parsed) - known:
        return None  # options in the URL's query: leave them to redis-py
    return DirectConnection(
        host=str(parsed.get("host") or "127.0.0.1"),
        port=int(parsed.get("port") or 6379),
        path=parsed.get("path"),
        username=parsed.get("username"),
        password=parsed.get("password"),
        db=int(parsed.get("db") or 0),
        client_name=client_name,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
    )


async def run_script(
    connection: DirectConnection,
    sha: str,
    source: str,
    keys: tuple[Any, ...] | list[Any],
    args: Any,
    *,
    replicas: int = 0,
    timeout_ms: int = 0,
    deadline: float | None = None,
) -> tuple[Any, int]:
    """EVALSHA (loading SOURCE after NOSCRIPT: a restarted server), then with
    REPLICAS a ``WAIT`` sent in the same write, on the same connection, so it
    counts the script's writes. The script's reply and the replicas that
    confirmed (0 without REPLICAS)."""
    command = ("EVALSHA", sha, len(keys), *keys, *args)
    for attempt in (1, 2):
        try:
            if not replicas:
                return await connection.call(*command, deadline=deadline), 0
            result, confirmed = await connection.call_many(
                [command, ("WAIT", replicas, timeout_ms)], deadline=deadline
            )
            if isinstance(result, Exception):
                raise result
            return result, int(confirmed)
        except rex.NoScriptError:
            if attempt == 2:
                raise
            await connection.call("SCRIPT", "LOAD", source, deadline=deadline)
    raise AssertionError("unreachable")  # pragma: no cover
