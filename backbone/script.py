"""One Lua script, run by ``EVALSHA`` and loaded again after ``NOSCRIPT`` (a
server restart): the base of every typed wrapper (:mod:`backbone.scripts` lists
them and where each lives).

A write that must be confirmed by replicas (``min_replicas``) runs its script
and ``WAIT`` on one connection, so the ``WAIT`` covers exactly the script's
writes; on a Redis Cluster both go to the master of the keys' slot.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from .events import as_text
from .slot_node import relearn_slots

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["Script"]


class Script:
    """A Lua script run by EVALSHA, loaded again after NOSCRIPT (a server restart)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (
            importlib.resources.files("backbone")
            .joinpath(f"lua/{name}.lua")
            .read_text()
        )
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(
        self, client: aioredis.Redis, keys: Sequence[str | bytes], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_and_wait(
        self,
        client: aioredis.Redis,
        keys: Sequence[str | bytes],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """Run the script, then ``WAIT`` on the same connection for REPLICAS to
        confirm its writes; returns (script result, replicas that confirmed)."""
        if isinstance(client, RedisCluster):
            return await self._run_and_wait_on_node(
                client, keys, args, replicas, timeout_ms
            )
        for attempt in (1, 2):
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", replicas, timeout_ms)
                result, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(result, rex.NoScriptError) and attempt == 1:
                await client.script_load(self.source)
                continue
            if isinstance(result, Exception):
                raise result
            return result, int(confirmed)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_and_wait_on_node(
        self,
        client: RedisCluster,
        keys: Sequence[str | bytes],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """:meth:`run_and_wait` on a Redis Cluster. ``WAIT`` has no key, so the
        cluster client would send it to any node, whose replicas know nothing of
        the script's writes: both commands go to the master of the keys' slot,
        on one connection. A redirection is not followed (the script would run
        on another node than the ``WAIT``): MOVED means the script did not run,
        so the client's map of the slots is corrected and both are sent again;
        ASK (a slot being moved) is transient."""
        for _ in range(3):
            await client.initialize()  # (once, or after a failure of the client's)
            node = client.get_node_from_key(as_text(keys[0]))
            if node is None:
                raise rex.SlotNotCoveredError(
                    f"no master holds the slot of {as_text(keys[0])} now"
                )
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.execute_command(
                        "EVALSHA", self.sha, len(keys), *keys, *args, target_nodes=node
                    )
                    pipe.execute_command(
                        "WAIT", replicas, timeout_ms, target_nodes=node
                    )
                    result, confirmed = await pipe.execute(
                        raise_on_error=False, allow_redirections=False
                    )
            except (rex.ConnectionError, rex.TimeoutError):
                # A pipeline does not make the client learn the slots again, as
                # a failed command does: the next attempt must not go to a
                # node that is gone (a failover) again.
                await relearn_slots(client, node.name)
                raise
            if isinstance(result, rex.NoScriptError):
                await client.script_load(self.source)
                continue
            if isinstance(result, rex.MovedError):
                await client.nodes_manager.move_slot(result)
                continue
            if isinstance(result, rex.AskError):
                raise rex.TryAgainError(
                    f"the slot of {as_text(keys[0])} is being moved to another "
                    f"node ({result}); try again"
                )
            if isinstance(result, Exception):
                raise result
            return result, int(confirmed)
        raise rex.TryAgainError(
            f"the node of {as_text(keys[0])}'s slot kept changing; try again"
        )
