"""MONITOR on the masters of a Redis Cluster, to see which keys each script
call touched: Redis refuses a script's key of another slot only when that slot
is on another node, so a stray key that happens to share the node passes every
test, and fails once the slot moves. The ``bus`` fixture (conftest.py) watches
every behaviour test on the cluster with it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from redis.cluster import key_slot

import backbone
from helpers import cluster_client

_LINE = re.compile(r"[0-9.]+ \[[0-9]+ ([^\]]+)\] (.*)")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_CONTAINERS = frozenset({"xinfo", "xgroup", "memory", "object"})
"""Commands whose subcommand comes first and key second (XINFO GROUPS key)."""

Commands = dict[str, dict[str, Any]]
"""What ``COMMAND`` says of each command (its key positions, its flags)."""


def command_keys(commands: Commands, args: list[bytes]) -> list[bytes]:
    """The keys (and sharded channels) of command ARGS, by where COMMAND says
    they are; XREAD(GROUP)'s follow STREAMS."""
    name = args[0].decode("latin-1").lower()
    info = commands.get(name)
    if info is None:
        raise AssertionError(f"MONITOR shows {name!r}, which COMMAND does not know")
    if name in ("xread", "xreadgroup"):
        upper = [arg.upper() for arg in args]
        after = args[upper.index(b"STREAMS") + 1 :]
        return after[: len(after) // 2]
    if name in _CONTAINERS:
        return args[2:3]
    if "movablekeys" in info["flags"]:
        raise AssertionError(f"a script runs {name}: say where its keys are here")
    first, last, step = info["first_key_pos"], info["last_key_pos"], info["step_count"]
    if first == 0:
        return []
    end = len(args) + last if last < 0 else last
    return args[first : end + 1 : step]


class ScriptSlots:
    """What MONITOR shows of the scripts one node ran: for each script call,
    the slot of its first declared key and the slots of the keys the commands
    it ran touched. A script that touches a key of another slot held by the
    same node is not refused by Redis, but it would be once that slot moves:
    only this shows it."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.lines: list[str] = []

    def calls(self) -> list[tuple[str, int, set[int]]]:
        """(sha or source, declared slot, slots of the keys it touched)."""
        found: list[tuple[str, int, set[int]]] = []
        current: set[int] | None = None
        for line in self.lines:
            match = _LINE.fullmatch(line)
            if match is None:
                continue
            who, rest = match.groups()
            args = [_unescape(arg) for arg in _ARG.findall(rest)]
            if who != "lua":
                current = None
                if args and args[0].lower() in (b"evalsha", b"eval") and int(args[2]):
                    current = set()
                    script = args[1].decode(errors="replace")
                    found.append((script, key_slot(args[3]), current))
            elif current is not None:
                keys = command_keys(self.commands, args)
                current |= {key_slot(key) for key in keys}
        return found


def _unescape(text: str) -> bytes:
    """The bytes MONITOR quoted as TEXT (ASCII, with \\xNN and \\" escapes)."""
    return text.encode("ascii", "replace").decode("unicode_escape").encode("latin-1")


def strays(monitors: list[ScriptSlots], names: dict[str, str]) -> list[str]:
    """A line for each script call MONITORS saw touch a key outside the slot of
    its declared keys (NAMES: sha -> script name; an EVAL shows its source)."""
    found: list[str] = []
    for monitor in monitors:
        for script, declared, touched in monitor.calls():
            if touched <= {declared}:
                continue
            name = names.get(script) or script.strip().splitlines()[0][:80]
            found.append(
                f"{name} touched keys of slots {sorted(touched - {declared})} besides "
                f"its own slot {declared}: it would fail once they are on another node"
            )
    return found


@contextlib.asynccontextmanager
async def monitoring(bus: backbone.Backbone) -> AsyncIterator[list[ScriptSlots]]:
    """MONITOR on every master of BUS's cluster while the block runs (and until
    each monitor has seen everything its node ran in it). Raises the server's
    ResponseError when it refuses MONITOR."""
    client = cluster_client(bus)
    await client.initialize()
    nodes = client.get_primaries()
    commands: Commands = await client.command()
    seen = [ScriptSlots(commands) for _ in nodes]
    marks = [asyncio.Event() for _ in nodes]
    # Connections of their own, with the cluster's credentials and TLS.
    connections = [node.connection_class(**node.connection_kwargs) for node in nodes]

    async def follow(n: int) -> None:
        while True:
            line = (await connections[n].read_response()).decode(errors="replace")
            seen[n].lines.append(line)
            if '"echo" "monitored"' in line.lower():
                marks[n].set()

    tasks: list[asyncio.Task[None]] = []
    try:
        for connection in connections:
            await connection.send_command("MONITOR")
            await connection.read_response()  # OK, or the refusal raised
        tasks = [asyncio.create_task(follow(n)) for n in range(len(nodes))]
        yield seen
        for node in nodes:
            await client.execute_command("ECHO", "monitored", target_nodes=node)
        for event in marks:
            await asyncio.wait_for(event.wait(), 10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in connections:
            await connection.disconnect()
