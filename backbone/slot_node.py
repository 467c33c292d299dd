"""What must run on one connection to the master of one slot, on a single Redis
server and on a Redis Cluster alike: a transaction (``WATCH`` ... ``MULTI`` ...
``EXEC``), and what to do when such a master stops answering.

redis-py's cluster client has a transaction pipeline of its own, but it runs
every command queued on it in a thread of its own with an event loop of its
own (about half a millisecond each: a projection's page of a hundred events and
two writes each costs a tenth of a second), and a command that finds the client
due to learn the cluster's layout again (after a failover) learns it in that
other loop, leaving connections bound to it. Every key of a transaction backbone
makes shares one hash tag, so one slot, so one master: the transaction runs on
a plain connection to that master instead, with the cluster's credentials and
TLS settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

__all__ = ["relearn_slots", "transaction"]


@contextlib.asynccontextmanager
async def transaction(client: aioredis.Redis, key: str) -> AsyncIterator[Pipeline]:
    """A transaction pipeline of CLIENT for keys of KEY's slot (``watch``,
    immediate reads, ``multi``, queued writes, ``execute``).

    On a Redis Cluster, a master that stops answering makes the client learn the
    layout again before it is raised; a slot that moved meanwhile (MOVED or
    ASK) is a :class:`redis.exceptions.TryAgainError`, transient: nothing of
    the transaction was applied."""
    if not isinstance(client, RedisCluster):
        async with client.pipeline(transaction=True) as pipe:
            yield pipe
        return
    await client.initialize()
    node = client.get_node_from_key(key)
    if node is None:
        raise rex.SlotNotCoveredError(f"no master holds the slot of {key} now")
    pool = aioredis.ConnectionPool(
        connection_class=node.connection_class, **node.connection_kwargs
    )
    direct = aioredis.Redis(connection_pool=pool)
    try:
        async with direct.pipeline(transaction=True) as pipe:
            yield pipe
    except (rex.ConnectionError, rex.TimeoutError):
        await relearn_slots(client, node.name)
        raise
    except rex.AskError as exc:  # and MovedError
        await relearn_slots(client, node.name)
        raise rex.TryAgainError(
            f"the slot of {key} moved away from {node.name} ({exc}); try again"
        ) from exc
    finally:
        await direct.aclose()
        await pool.disconnect()


async def relearn_slots(client: RedisCluster, failed: str) -> None:
    """Ask the cluster which master holds which slot (FAILED, a node that did
    not answer, last). A command of the cluster client does that by itself when
    its node fails; a pipeline, and a connection of one's own, do not. When no
    node answers, the next attempt fails anyway."""
    with contextlib.suppress(rex.RedisError, rex.RedisClusterException, OSError):
        await client.nodes_manager.initialize(last_failed_node_name=failed)
