"""Redis as pods in the two other modes the operator supports, a Sentinel group and a 6-node
Cluster (Debian's redis-server and redis-sentinel); a LockStore on each goes Ready, the
operator probing them from its pod over the pod network, as bots reach them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.node.test_operator import Release, install_chart, lock_store, wait_store_ready
from tests.platform.cluster import Cluster
from tests.platform.node_fixtures import NodeImages
from tests.platform.workloads import (
    apply,
    start_redis_cluster,
    start_sentinel_group,
)


@pytest.fixture(scope="module")
def release(node_cluster: Cluster, node_images: NodeImages) -> Iterator[Release]:
    with install_chart(node_cluster, node_images) as release:
        yield release


def test_lockstore_on_a_sentinel_group_of_pods_goes_ready(
    node_cluster: Cluster, node_images: NodeImages, release: Release
) -> None:
    ns = release.bots
    master, sentinels = start_sentinel_group(node_cluster, node_images.redis, ns)
    spec = lock_store("sentinel-locks", "", "sentinel", "sentinel-endpoints")
    spec["spec"]["redis"] = {
        "deploymentMode": "sentinel",
        "endpoints": [f"{ip}:26379" for ip in sentinels],
        "sentinelService": "mymaster",
    }
    apply(node_cluster, ns, spec)
    wait_store_ready(node_cluster, ns, "sentinel-locks", timeout=120)
    store = node_cluster.control_plane.get_json("lockstore", "sentinel-locks", "-n", ns)
    assert store is not None
    assert master in str(store["status"].get("master", "")), store["status"]


def test_lockstore_on_a_six_pod_redis_cluster_goes_ready(
    node_cluster: Cluster, node_images: NodeImages, release: Release
) -> None:
    ns = release.bots
    ips = start_redis_cluster(node_cluster, node_images.redis, ns)
    spec = lock_store("cluster-locks", "", "cluster", "cluster-endpoints")
    spec["spec"]["redis"] = {
        "deploymentMode": "cluster",
        "endpoints": [f"{ip}:6379" for ip in ips[:3]],
        "keyPrefix": "cluster",
    }
    apply(node_cluster, ns, spec)
    wait_store_ready(node_cluster, ns, "cluster-locks", timeout=120)
