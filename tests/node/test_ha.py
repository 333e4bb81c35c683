"""Two operator pods by the chart (``replicaCount: 2``, peering): one works, the other waits; the
working one deleted, the other takes over within a stated bound."""

from __future__ import annotations

import time
from typing import Any

from tests.node.test_operator import (
    OPERATOR_PODS,
    install_chart,
    lock_store,
    start_redis,
    wait_store_ready,
)
from tests.platform.cluster import Cluster
from tests.platform.control_plane import wait_for
from tests.platform.node_fixtures import FIGURES, NodeImages
from tests.platform.workloads import apply
from turnstile.operator.handlers.stores import PEERING_LIFETIME

#: A deleted pod says goodbye in the peering record, so the other replica should resume at once;
#: the bound allows for a pod that dies without one (its record runs out) plus a reconcile.
TAKEOVER_BOUND = PEERING_LIFETIME + 15


def _active_peer(cluster: Cluster, namespace: str) -> str | None:
    """The pod name kopf's peering says is active: the live peer with the highest priority."""
    data = cluster.control_plane.get_json("kopfpeerings", "-n", namespace)
    peers: dict[str, Any] = {}
    for item in (data or {}).get("items", []):
        peers.update(item.get("status") or {})
    if len(peers) < 2:
        return None
    return str(max(peers, key=lambda peer: peers[peer].get("priority", 0)))


def test_the_other_replica_takes_over_when_the_active_pod_is_deleted(
    node_cluster: Cluster, node_images: NodeImages
) -> None:
    with install_chart(node_cluster, node_images, replicas=2) as release:
        redis_ip = start_redis(node_cluster, node_images, release.bots)
        apply(node_cluster, release.bots, lock_store("before", redis_ip, "before", "before-cm"))
        wait_store_ready(node_cluster, release.bots, "before")
        names = {
            p["metadata"]["name"]
            for p in node_cluster.control_plane.get_json(
                "pods", "-n", release.namespace, "-l", OPERATOR_PODS
            )["items"]  # type: ignore[index]
        }
        active = wait_for(
            "both replicas in the peering record",
            lambda: _active_peer(node_cluster, release.bots),
            timeout=60,
            interval=1,
        )
        assert active in names, (active, names)

        deleted = time.monotonic()
        node_cluster.kubectl("-n", release.namespace, "delete", "pod", active, "--wait=false")
        apply(node_cluster, release.bots, lock_store("after", redis_ip, "after", "after-cm"))
        wait_store_ready(node_cluster, release.bots, "after", timeout=TAKEOVER_BOUND + 60)
        took = time.monotonic() - deleted
        FIGURES["HA: active operator pod deleted -> a new store Ready"] = took
        assert took < TAKEOVER_BOUND, f"takeover took {took:.1f} s (bound {TAKEOVER_BOUND} s)"
        (survivor,) = names - {active}
        log = node_cluster.kubectl("-n", release.namespace, "logs", survivor).stdout
        assert "after" in log, log[-3000:]
