"""Redis as pods in the two other modes the operator supports, a Sentinel group and a 6-node
Cluster (Debian's redis-server and redis-sentinel); a LockStore on each goes Ready, the
operator probing them from its pod over the pod network, as bots reach them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.node.conftest import apply, wait_ready_pods
from tests.node.test_operator import Release, install_chart, lock_store, wait_store_ready
from tests.platform.cluster import Cluster
from tests.platform.control_plane import wait_for
from tests.platform.node_fixtures import NodeImages

_SERVER = ["--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no",
           "--save", "", "--appendonly", "no"]  # fmt: skip


@pytest.fixture(scope="module")
def release(node_cluster: Cluster, node_images: NodeImages) -> Iterator[Release]:
    with install_chart(node_cluster, node_images) as release:
        yield release


def _pod(
    images: NodeImages, name: str, app: str, port: int, *, args: list[str] | None = None,
    script: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    container: dict[str, Any] = {
        "name": "redis",
        "image": images.redis.name,
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": port}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
    }
    if script is not None:
        container["command"] = ["/bin/sh", "-c", script]
    else:
        container["args"] = args or []
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
    }


def _ips(cluster: Cluster, namespace: str, app: str, count: int) -> list[str]:
    found = wait_ready_pods(cluster, namespace, f"app={app}", count)
    return [p["status"]["podIP"] for p in sorted(found, key=lambda p: p["metadata"]["name"])]


def test_lockstore_on_a_sentinel_group_of_pods_goes_ready(
    node_cluster: Cluster, node_images: NodeImages, release: Release
) -> None:
    ns = release.bots
    apply(node_cluster, ns, _pod(node_images, "sentinel-master", "sentinel-master", 6379,
                                 args=_SERVER))  # fmt: skip
    (master,) = _ips(node_cluster, ns, "sentinel-master", 1)
    sentinel_conf = (
        "printf 'port 26379\\nbind 0.0.0.0\\nprotected-mode no\\n"
        f"sentinel monitor mymaster {master} 6379 2\\n"
        "sentinel down-after-milliseconds mymaster 5000\\n' > /tmp/sentinel.conf"
        " && exec redis-sentinel /tmp/sentinel.conf"
    )
    apply(
        node_cluster,
        ns,
        _pod(node_images, "sentinel-replica", "sentinel-replica", 6379,
             args=[*_SERVER, "--replicaof", master, "6379"]),
        *(_pod(node_images, f"sentinel-{i}", "sentinel", 26379, script=sentinel_conf)
          for i in range(3)),
    )  # fmt: skip
    _ips(node_cluster, ns, "sentinel-replica", 1)
    sentinels = _ips(node_cluster, ns, "sentinel", 3)
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
    args = [*_SERVER, "--cluster-enabled", "yes", "--cluster-config-file", "/tmp/nodes.conf"]
    pods = [_pod(node_images, f"cluster-{i}", "cluster", 6379, args=args) for i in range(6)]
    apply(node_cluster, ns, *pods)
    ips = _ips(node_cluster, ns, "cluster", 6)
    node_cluster.kubectl(
        "-n", ns, "exec", "cluster-0", "--", "redis-cli", "--cluster", "create",
        *(f"{ip}:6379" for ip in ips), "--cluster-replicas", "1", "--cluster-yes",
        timeout=120,
    )  # fmt: skip

    def cluster_ok() -> bool:
        info = node_cluster.kubectl(
            "-n", ns, "exec", "cluster-0", "--", "redis-cli", "cluster", "info", check=False
        ).stdout
        return "cluster_state:ok" in info

    wait_for("cluster_state:ok", cluster_ok, timeout=60, interval=1)
    spec = lock_store("cluster-locks", "", "cluster", "cluster-endpoints")
    spec["spec"]["redis"] = {
        "deploymentMode": "cluster",
        "endpoints": [f"{ip}:6379" for ip in ips[:3]],
        "keyPrefix": "cluster",
    }
    apply(node_cluster, ns, spec)
    wait_store_ready(node_cluster, ns, "cluster-locks", timeout=120)
