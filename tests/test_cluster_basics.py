"""backbone on a Redis Cluster: its URLs, and every command of the command line
on one (``--redis-url redis+cluster://...``), with one line for a cluster that
cannot serve.

That no code path raises CROSSSLOT is shown by the whole behaviour suite, which
runs on a Redis Cluster too (the ``cluster`` parameter of the ``url`` fixture,
see conftest.py), and by test_cluster_scripts.py for the scripts.
"""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection

import backbone
from backbone.events import as_text
from cluster import LocalCluster
from conftest import eventually, free_port, require_cluster_binaries
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import masters, moment, node_of, spread_uris
from test_dlq_cli import assert_one_error_line, backbone_cli

pytestmark = pytest.mark.cluster


# --- URLs --------------------------------------------------------------------------


def node_address(cluster_url: str) -> str:
    return cluster_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]


async def test_a_cluster_url_reaches_every_master(
    cluster_bus: backbone.Backbone,
) -> None:
    assert cluster_bus.cluster
    assert isinstance(cluster_bus.redis, RedisCluster)
    assert await cluster_bus.ping()
    uris = await spread_uris(cluster_bus, "hello")
    sent = [
        await shipment_tracking_producer(cluster_bus, uri).packing("a@b.c", n, moment())
        for n, uri in enumerate(uris)
    ]
    nodes = set()
    for uri, event_id in zip(uris, sent, strict=True):
        stream = cluster_bus.keys(uri).stream
        [(entry, _)] = await cluster_bus.redis.xrange(stream)
        assert as_text(entry) == event_id.id
        nodes.add(await node_of(cluster_bus, stream))
    assert nodes == await masters(cluster_bus)


async def test_a_plain_url_to_a_cluster_node_is_refused_naming_the_cluster_url(
    cluster_url: str, environment: str
) -> None:
    address = node_address(cluster_url)
    plain = f"redis://{address}/0"
    async with backbone.Backbone(plain, environment=environment) as bus:
        with pytest.raises(backbone.ConfigurationError) as caught:
            await bus.ping()
        assert f"redis+cluster://{address}" in str(caught.value)
        with pytest.raises(backbone.ConfigurationError, match="redis\\+cluster://"):
            await shipment_tracking_producer(bus, "orders").packing("a", 1, moment())

    result = backbone_cli("inspect", "--redis-url", plain, "-e", environment)
    assert_one_error_line(result, 1, f"redis+cluster://{address}", "Redis Cluster")
    assert result.stdout == ""


async def test_cluster_urls_are_parsed_and_a_database_is_refused() -> None:
    port = free_port()  # nothing is sent: the client connects at its first command
    async with backbone.Backbone(f"rediss+cluster://127.0.0.1:{port}") as secure:
        assert secure.cluster
        assert isinstance(secure.redis, RedisCluster)
        kwargs = secure.redis.get_connection_kwargs()
        assert issubclass(kwargs["connection_class"], SSLConnection)

    url = f"redis+cluster://user:secret@127.0.0.1:{port}/0"
    async with backbone.Backbone(url) as plain:
        assert plain.cluster
        kwargs = plain.redis.get_connection_kwargs()
        assert (kwargs["username"], kwargs["password"]) == ("user", "secret")
        assert not issubclass(kwargs["connection_class"], SSLConnection)
        assert "secret" not in repr(plain)

    for url in (f"redis+cluster://127.0.0.1:{port}/2", f"rediss+cluster://h:{port}/1"):
        with pytest.raises(backbone.ConfigurationError, match="database") as caught:
            backbone.Backbone(url)
        assert "drop the /db part" in str(caught.value)


# --- the command line -------------------------------------------------------------


async def test_the_commands_read_and_trim_streams_of_every_master(
    cluster_bus: backbone.Backbone, cluster_url: str, environment: str
) -> None:
    uris = await spread_uris(cluster_bus, "orders")
    for n, uri in enumerate(uris):
        producer = shipment_tracking_producer(cluster_bus, uri)
        for m in range(n + 2):
            await producer.packing(f"u{m}@example.com", m, moment())
    where = ("--redis-url", cluster_url, "--environment", environment)

    listed = backbone_cli("inspect", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    streams = json.loads(listed.stdout)["streams"]
    assert [(s["uri"], s["length"]) for s in streams] == sorted(
        (uri, n + 2) for n, uri in enumerate(uris)
    )

    tailed = backbone_cli(
        "tail", uris[-1], "--from", "beginning", "--count", "2", "--json", *where
    )
    assert tailed.returncode == 0, tailed.stderr
    events = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert [e["payload"]["email"] for e in events] == [
        "u0@example.com",
        "u1@example.com",
    ]

    trimmed = backbone_cli("trim", *uris, "--max-len", "1", *where)
    assert trimmed.returncode == 0, trimmed.stderr
    for uri in uris:
        assert await cluster_bus.redis.xlen(cluster_bus.keys(uri).stream) == 1

    letters = backbone_cli("dlq", "list", "--uri", uris[0], *where)
    assert letters.returncode == 0, letters.stderr


def test_a_cluster_no_node_of_which_answers_is_one_line() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    for args in (
        ("inspect",),
        ("tail", "orders", "--count", "1"),
        ("dlq", "list", "--uri", "orders"),
    ):
        result = backbone_cli(*args, "--redis-url", url)
        assert_one_error_line(
            result, 1, "cannot reach any node of the Redis Cluster", "--redis-url"
        )
        assert result.stdout == ""


async def test_a_cluster_down_after_losing_a_master_is_one_line() -> None:
    """A master dies and has no replica: the other masters answer CLUSTERDOWN,
    or the client cannot start (it asks a master it knows, maybe the dead one,
    for the command table): either way one line that says which."""
    require_cluster_binaries()
    with LocalCluster(3, 0) as cluster:
        async with backbone.Backbone(cluster.url) as bus:
            uris = await spread_uris(bus, "orders")
        victim = cluster.master_of_key(bus.keys(uris[0]).stream)
        seed = next(node for node in cluster.nodes if node is not victim)
        victim.kill()

        async def down() -> bool:
            info = await probe.execute_command("CLUSTER INFO")
            return bool(info.get("cluster_state") == "fail")

        probe = aioredis.Redis(port=seed.port)
        try:
            await eventually(down, timeout=30, message="the cluster to be down")
        finally:
            await probe.aclose()
        url = f"redis+cluster://{seed.address}"
        for args in (
            ("inspect", uris[1]),
            ("inspect",),
            ("dlq", "list", "-u", uris[2]),
        ):
            result = backbone_cli(*args, "--redis-url", url)
            line = assert_one_error_line(result, 1)
            assert (
                "the Redis Cluster cannot serve the command now (CLUSTERDOWN" in line
                or f"cannot reach Redis (ConnectionError: Error 111 connecting to "
                f"{victim.address}"
                in line
            ), line
