"""A TCP proxy in front of Redis that tests can make misbehave."""

from __future__ import annotations

import asyncio
import contextlib


class FlakyProxy:
    """Forwards 127.0.0.1:<port> to a Redis; can drop replies or cut connections.

    ``drop_replies(n)``: for the next N replies from Redis, close the client's
    connection instead of forwarding the reply (the command ran, the client does
    not learn its outcome). ``drop_reply_containing(marker)``: the same for the
    next reply holding MARKER. ``cut()``: close every open connection now.
    ``refuse(True)``: accept and close new connections at once (Redis "down");
    ``refused`` counts them.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._drop = 0
        self._drop_marker: bytes | None = None
        self._refuse = False
        self.refused = 0
        self._links: set[asyncio.StreamWriter] = set()
        self.dropped = 0

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

    def cut(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

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
        self._links.update({writer, up_writer})

        async def client_to_server() -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.transport.abort()

        async def server_to_client() -> None:
            with contextlib.suppress(Exception):
                while data := await up_reader.read(65536):
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
            writer.transport.abort()
            up_writer.transport.abort()

        await asyncio.gather(client_to_server(), server_to_client())
        self._links.discard(writer)
        self._links.discard(up_writer)
