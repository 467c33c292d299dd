"""A minimal Redis client on asyncio streams: hiredis packs and parses, nothing else.

The hand-written baselines use it to show what the same work costs with no client
library in the way: one ``write`` per call (a whole pipeline or transaction), the
replies read straight from the socket by the caller, no connection pool, no
per-command Python objects. It is still correct: replies are taken in the order
the commands were sent, a lock keeps concurrent callers from interleaving, and
every error reply (also one inside an EXEC or pipeline answer) is raised, after
all of the call's replies are read so the connection stays in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import hiredis

__all__ = ["RawError", "RawRedis", "RawScript"]

Arg = str | bytes | int | float
Command = Sequence[Arg]


class RawError(RuntimeError):
    """Redis answered a command with an error."""


def _check(reply: Any) -> Any:
    """REPLY, or RawError when it is an error or holds one (EXEC, a pipeline)."""
    if isinstance(reply, hiredis.ReplyError):
        raise RawError(str(reply))
    if isinstance(reply, list):
        for item in reply:
            if isinstance(item, hiredis.ReplyError):
                raise RawError(str(item))
    return reply


class RawRedis:
    """One connection; ``await execute(cmd, ...)`` sends CMDs in one write and
    returns their replies in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()
        self._lock = asyncio.Lock()
        self._broken = False

    @classmethod
    async def connect(cls, url: str) -> RawRedis:
        """Connect to a ``redis://[user:password@]host:port/db`` URL (no TLS)."""
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise ValueError(f"the raw client speaks redis:// only, not {url!r}")
        reader, writer = await asyncio.open_connection(
            parsed.hostname or "127.0.0.1", parsed.port or 6379
        )
        client = cls(reader, writer)
        if parsed.password:
            await client.call("AUTH", *filter(None, [parsed.username]), parsed.password)
        db = (parsed.path or "/0").lstrip("/") or "0"
        if db != "0":
            await client.call("SELECT", db)
        return client

    async def execute(self, *commands: Command) -> list[Any]:
        """Send COMMANDS in one write; their replies, in order. Raises RawError
        for the first error reply once all replies are in."""
        # (hiredis's stub types its argument as a 1-tuple; any length works)
        data = b"".join(hiredis.pack_command(tuple(cmd)) for cmd in commands)  # type: ignore[arg-type]
        async with self._lock:
            if self._broken:
                raise ConnectionError("an earlier call on this connection was cut")
            self._writer.write(data)
            replies: list[Any] = []
            parser, read = self._parser, self._reader.read
            try:
                while len(replies) < len(commands):
                    reply = parser.gets()
                    if reply is False:
                        chunk = await read(1 << 20)
                        if not chunk:
                            raise ConnectionError("Redis closed the connection")
                        parser.feed(chunk)
                        continue
                    replies.append(reply)
            except BaseException:
                # Cancelled or cut mid-reply: later replies would be misread.
                self._broken = True
                self._writer.close()
                raise
        for reply in replies:
            _check(reply)
        return replies

    async def call(self, *args: Arg) -> Any:
        """One command; its reply."""
        return (await self.execute(args))[0]

    async def transaction(self, *commands: Command) -> list[Any]:
        """MULTI, COMMANDS, EXEC in one write; EXEC's replies."""
        replies = await self.execute(("MULTI",), *commands, ("EXEC",))
        exec_reply: list[Any] = _check(replies[-1])
        return exec_reply

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class RawScript:
    """A Lua script called by EVALSHA, loaded again by EVAL when the server has
    lost it (NOSCRIPT, e.g. after SCRIPT FLUSH or a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]

    async def __call__(
        self, client: RawRedis, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Any:
        try:
            return await client.call(*self.command(keys, args))
        except RawError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await client.call("EVAL", self.source, len(keys), *keys, *args)
