"""The operator as users run it: its image built from the repo's Dockerfile, installed by the
chart, probing Redis that runs as a pod, and rolling bot pods when what they load changes."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.node.conftest import bot_deployment, busybox_container
from tests.platform import workloads
from tests.platform.cluster import Cluster
from tests.platform.control_plane import wait_for
from tests.platform.node_fixtures import FIGURES, NodeImages
from tests.platform.workloads import (  # other modules of the tier import them from here
    OPERATOR_PODS,
    Release,
    apply,
    is_ready,
    lock_store,
    pods,
    wait_ready_pods,
    wait_store_ready,
)
from turnstile.operator.model.kinds import CHECKSUM_ANNOTATION

__all__ = ["OPERATOR_PODS", "Release", "install_chart", "lock_store", "start_redis",
           "wait_store_ready"]  # fmt: skip


def start_redis(cluster: Cluster, images: NodeImages, namespace: str) -> str:
    return workloads.start_redis(cluster, images.redis, namespace)


@contextlib.contextmanager
def install_chart(cluster: Cluster, images: NodeImages, *, replicas: int = 1) -> Iterator[Release]:
    with workloads.install_chart(cluster, images.operator, replicas=replicas) as release:
        yield release


@pytest.fixture(scope="module")
def release(node_cluster: Cluster, node_images: NodeImages) -> Iterator[Release]:
    """The chart installed once for this module, one replica."""
    with install_chart(node_cluster, node_images) as release:
        FIGURES["operator pod Ready after helm install"] = release.ready_seconds
        yield release


@pytest.fixture(scope="module")
def redis_ip(node_cluster: Cluster, node_images: NodeImages, release: Release) -> str:
    return start_redis(node_cluster, node_images, release.bots)


def test_operator_pod_runs_non_root_read_only_and_serves_metrics(
    node_cluster: Cluster, release: Release
) -> None:
    (pod,) = pods(node_cluster, release.namespace, OPERATOR_PODS)
    name = pod["metadata"]["name"]
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, status
    container = pod["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    def run(script: str) -> Any:
        return node_cluster.kubectl(
            "-n", release.namespace, "exec", name, "--", "/bin/sh", "-c", script, check=False
        )

    assert run("id -u").stdout.strip() == "10001"
    touch = run("touch /probe-write")
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch
    assert run("touch /tmp/probe-write").returncode == 0  # the chart's emptyDir

    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    assert "# TYPE" in body


def test_lockstore_on_a_redis_pod_goes_ready(
    node_cluster: Cluster, release: Release, redis_ip: str
) -> None:
    apply(node_cluster, release.bots, lock_store("locks", redis_ip, "ready", "ready-endpoints"))
    wait_store_ready(node_cluster, release.bots, "locks")
    configmap = node_cluster.control_plane.get_json(
        "configmap", "ready-endpoints", "-n", release.bots
    )
    assert configmap is not None
    assert redis_ip in configmap["data"]["endpoints.yml"]


def test_lockstore_change_rolls_bot_pods_onto_the_new_file(
    node_cluster: Cluster, node_images: NodeImages, release: Release, redis_ip: str
) -> None:
    """The old bot pods are replaced by new ones that read the changed endpoints.yml."""
    rollout = {"workloads": [{"kind": "Deployment", "name": "bot"}]}
    apply(
        node_cluster,
        release.bots,
        lock_store("bot-locks", redis_ip, "first", "bot-endpoints", rollout=rollout),
    )
    # The file first (the bot's pods mount it), then the bot: the store is Ready once its
    # workload exists and has been rolled onto the file's checksum, and that first rollout is
    # over before the pods that count as "old" are taken.
    wait_store_ready(node_cluster, release.bots, "bot-locks", condition="ConfigRendered")
    bot = busybox_container(
        node_images.busybox,
        "cat /app/endpoints.yml; exec sleep 3600",
        volumeMounts=[{"name": "endpoints", "mountPath": "/app"}],
    )
    apply(node_cluster, release.bots, bot_deployment(
        bot, volumes=[{"name": "endpoints", "configMap": {"name": "bot-endpoints"}}],
    ))  # fmt: skip
    wait_store_ready(node_cluster, release.bots, "bot-locks")

    def template_checksum() -> str | None:
        bot = node_cluster.control_plane.get_json("deployment", "bot", "-n", release.bots)
        if not bot:
            return None
        annotations = bot["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(CHECKSUM_ANNOTATION)

    wait_for("the bot's template on the file's checksum", template_checksum, timeout=60)
    node_cluster.kubectl(
        "-n", release.bots, "rollout", "status", "deployment/bot", "--timeout=150s", timeout=180,
    )  # fmt: skip
    old = wait_ready_pods(node_cluster, release.bots, "app=bot", 2)
    old_uids = {p["metadata"]["uid"] for p in old}
    for pod in old:
        log = node_cluster.kubectl("-n", release.bots, "logs", pod["metadata"]["name"]).stdout
        assert "\n  key_prefix: first\n" in log, log

    apply(
        node_cluster,
        release.bots,
        lock_store("bot-locks", redis_ip, "second", "bot-endpoints", rollout=rollout),
    )

    def replaced() -> list[dict[str, Any]] | None:
        now = pods(node_cluster, release.bots, "app=bot")
        fresh = [p for p in now if p["metadata"]["uid"] not in old_uids]
        if len(now) == 2 and len(fresh) == 2 and all(is_ready(p) for p in fresh):
            return fresh
        return None

    try:
        new = wait_for("the bot pods replaced", replaced, timeout=180, interval=1)
    except Exception:
        print(node_cluster.kubectl("-n", release.bots, "get", "pods,rs,events").stdout)
        raise
    for pod in new:
        # What the container read when it started: the file as the change rendered it (the
        # store's own prefix is the new one; the old one stays only as `transition_from`, the
        # operator's window-free move between stores, docs/adoption.md).
        log = node_cluster.kubectl("-n", release.bots, "logs", pod["metadata"]["name"]).stdout
        assert "\n  key_prefix: second\n" in log, log
