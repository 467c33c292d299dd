"""`backbone demo --redis-url redis+cluster://...` runs both samples on a Redis
Cluster (3 masters, 1 replica each) and leaves no key behind on any master."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cluster import LocalCluster
from conftest import require_cluster_binaries
from test_demo import check_output, run_demo

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    require_cluster_binaries()
    local = LocalCluster(3, 1).start()
    try:
        yield local
    finally:
        local.stop()


def keys_left(cluster: LocalCluster, pattern: str) -> list[bytes]:
    left: list[bytes] = []
    for node in cluster.master_nodes():
        client = redis.Redis(host="127.0.0.1", port=node.port)
        try:
            left += list(client.scan_iter(match=pattern))
        finally:
            client.close()
    return left


def test_the_shipment_demo_runs_on_a_cluster(cluster: LocalCluster) -> None:
    result = run_demo("--orders", "5", "--redis-url", cluster.url)
    check_output(result, 5)
    assert cluster.url in result.stdout
    assert keys_left(cluster, "bb:{demo:*") == []


def test_the_accounts_sample_runs_on_a_cluster(cluster: LocalCluster) -> None:
    result = run_demo(
        "--sample", "accounts", "--orders", "3", "--redis-url", cluster.url
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every balance agrees" in result.stdout
