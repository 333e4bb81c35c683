"""The operator as users run it: its image built from the repo's Dockerfile, installed by the
chart, probing Redis that runs as a pod, and rolling bot pods when what they load changes."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.node.conftest import (
    apply,
    bot_deployment,
    busybox_container,
    is_ready,
    pods,
    wait_default_service_account,
    wait_ready_pods,
)
from tests.platform.cluster import Cluster
from tests.platform.control_plane import REPO_ROOT, wait_for
from tests.platform.node_fixtures import FIGURES, NodeImages
from turnstile.operator.model.kinds import CHECKSUM_ANNOTATION

CHART = REPO_ROOT / "charts" / "turnstile-operator"
OPERATOR_PODS = "app.kubernetes.io/name=turnstile-operator"


@dataclass(frozen=True)
class Release:
    namespace: str  # the operator's
    bots: str  # the namespace it watches
    ready_seconds: float  # helm install to the operator pod Ready


@contextlib.contextmanager
def install_chart(cluster: Cluster, images: NodeImages, *, replicas: int = 1) -> Iterator[Release]:
    """``helm install`` the chart with the image built here; the operator watches ``bots``."""
    suffix = uuid.uuid4().hex[:6]
    namespace, bots = f"turnstile-{suffix}", f"bots-{suffix}"
    cluster.kubectl("create", "namespace", bots)
    wait_default_service_account(cluster, bots)
    repository, tag = images.operator.name.removeprefix("docker.io/").split(":")
    cp = cluster.control_plane
    helm = str(cp.binary("helm"))
    began = time.monotonic()
    result = subprocess.run(
        [
            helm, "install", "turnstile", str(CHART),
            "--namespace", namespace, "--create-namespace",
            "--set", "image.registry=docker.io",
            "--set", f"image.repository={repository}",
            "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never",
            "--set", f"replicaCount={replicas}",
            "--set", f"watchNamespaces={{{bots}}}",
            "--wait", "--timeout", "180s",
        ],
        capture_output=True, text=True, env=cp.env(), timeout=240, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        print(cp.kubectl("-n", namespace, "get", "pods,events", "-o", "wide", check=False).stdout)
        pytest.fail(f"helm install failed: {result.stdout}\n{result.stderr}")
    wait_ready_pods(cluster, namespace, OPERATOR_PODS, replicas)
    ready = time.monotonic() - began
    try:
        yield Release(namespace, bots, ready)
    finally:
        subprocess.run(
            [helm, "uninstall", "turnstile", "--namespace", namespace],
            capture_output=True, env=cp.env(), timeout=120, check=False,
        )  # fmt: skip
        for ns in (bots, namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def start_redis(cluster: Cluster, images: NodeImages, namespace: str) -> str:
    """A standalone Redis pod (Debian's redis-server) behind a Service; its ClusterIP.

    The tier runs no cluster DNS, so stores name Services by ClusterIP, as bots then do.
    """
    container = {
        "name": "redis",
        "image": images.redis.name,
        "imagePullPolicy": "Never",
        "args": ["--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no",
                 "--save", "", "--appendonly", "no"],
        "ports": [{"containerPort": 6379}],
        "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }  # fmt: skip
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "redis", "labels": {"app": "redis"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379}]},
        },
    )
    wait_ready_pods(cluster, namespace, "app=redis", 1)
    service = cluster.control_plane.get_json("service", "redis", "-n", namespace)
    assert service is not None
    return str(service["spec"]["clusterIP"])


@pytest.fixture(scope="module")
def release(node_cluster: Cluster, node_images: NodeImages) -> Iterator[Release]:
    """The chart installed once for this module, one replica."""
    with install_chart(node_cluster, node_images) as release:
        FIGURES["operator pod Ready after helm install"] = release.ready_seconds
        yield release


@pytest.fixture(scope="module")
def redis_ip(node_cluster: Cluster, node_images: NodeImages, release: Release) -> str:
    return start_redis(node_cluster, node_images, release.bots)


def lock_store(
    name: str, redis_ip: str, prefix: str, configmap: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "turnstile.dev/v1alpha1",
        "kind": "LockStore",
        "metadata": {"name": name},
        "spec": {
            "redis": {
                "deploymentMode": "standard",
                "host": redis_ip,
                "port": 6379,
                "keyPrefix": prefix,
            },
            "configMap": {"name": configmap},
            **spec,
        },
    }


def wait_store_ready(
    cluster: Cluster, namespace: str, name: str, timeout: float = 120, condition: str = "Ready"
) -> None:
    """Wait until the LockStore's ``condition`` is True (``Ready`` needs its named workloads to
    exist: until then it is ``WorkloadNotFound``)."""

    def ready() -> bool:
        store = cluster.control_plane.get_json("lockstore", name, "-n", namespace)
        conditions = (store or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == condition and c["status"] == "True" for c in conditions)

    try:
        wait_for(f"LockStore {namespace}/{name} {condition}", ready, timeout=timeout, interval=1)
    except Exception:
        print(cluster.kubectl("-n", namespace, "get", "lockstore", name, "-o", "yaml").stdout)
        raise


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
