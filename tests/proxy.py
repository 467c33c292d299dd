"""A TCP proxy in front of Redis that tests can make misbehave."""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    """One client connection and the proxy's connection to Redis for it."""

    __slots__ = ("awaiting_answer", "buffer", "client", "client_gone", "held", "server")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter):
        self.client = client
        self.server = server
        self.held = False
        self.buffer = bytearray()
        self.client_gone = False
        self.awaiting_answer = False

    def abort(self) -> None:
        self.client.transport.abort()
        self.server.transport.abort()


class FlakyProxy:
    """Forwards 127.0.0.1:<port> to a Redis; can drop replies, hold requests or
    cut connections.

    ``drop_replies(n)``: for the next N replies from Redis, close the client's
    connection instead of forwarding the reply (the command ran, the client does
    not learn its outcome). ``drop_reply_containing(marker)``: the same for the
    next reply holding MARKER. ``cut()``: close every open connection now.
    ``refuse(True)``: accept and close new connections at once (Redis "down");
    ``refused`` counts them.

    ``hold()``: stop forwarding what clients send on the connections open now (a
    half-open link: the client's bytes are sent but do not arrive); ``held_bytes``
    counts what is kept. Connections opened later are forwarded normally. A held
    link's connection to Redis stays open when its client gives up and closes.
    ``release()``: forward the kept bytes to Redis, late, and go on forwarding;
    ``answered`` counts the released links Redis has answered since (their
    commands ran; the answer goes to a client that is gone, or to the client).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._drop = 0
        self._drop_marker: bytes | None = None
        self._refuse = False
        self.refused = 0
        self._links: set[_Link] = set()
        self.dropped = 0
        self.answered = 0

    async def start(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_replies(self, count: int = 1) -> None:
        self._drop = count

    def drop_reply_containing(self, marker: bytes) -> None:
        self._drop_marker = marker

    def refuse(self, refusing: bool = True) -> None:
        self._refuse = refusing
        if refusing:
            self.cut()

    def hold(self) -> None:
        for link in self._links:
            link.held = True

    @property
    def held_bytes(self) -> int:
        return sum(len(link.buffer) for link in self._links)

    def release(self) -> int:
        """Forward what held links kept; returns how many links had bytes to send."""
        released = 0
        for link in list(self._links):
            if not link.held:
                continue
            link.held = False
            if link.buffer:
                link.awaiting_answer = True
                link.server.write(bytes(link.buffer))
                link.buffer.clear()
                released += 1
            elif link.client_gone:
                self._forget(link)
        return released

    def cut(self) -> None:
        for link in list(self._links):
            self._forget(link)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _forget(self, link: _Link) -> None:
        link.abort()
        self._links.discard(link)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._refuse:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)

        async def client_to_server() -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    if link.held:
                        link.buffer += data
                        continue
                    up_writer.write(data)
                    await up_writer.drain()
            link.client_gone = True
            if not link.held:
                # A held link keeps its connection to Redis for release().
                up_writer.transport.abort()

        async def server_to_client() -> None:
            with contextlib.suppress(Exception):
                while data := await up_reader.read(65536):
                    if link.awaiting_answer:
                        link.awaiting_answer = False
                        self.answered += 1
                    if link.client_gone:
                        break
                    if self._drop > 0:
                        self._drop -= 1
                        self.dropped += 1
                        break
                    if self._drop_marker is not None and self._drop_marker in data:
                        self._drop_marker = None
                        self.dropped += 1
                        break
                    writer.write(data)
                    await writer.drain()
            link.abort()

        await asyncio.gather(client_to_server(), server_to_client())
        self._links.discard(link)
