"""What runs on the node tier's cluster, for its tests and for ``make demo``: the operator
installed by its chart, Redis as pods, stores, and waits on pods. Plain functions over a
:class:`~tests.platform.cluster.Cluster` (no pytest): a failure raises
:class:`WorkloadError` with what the cluster showed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.platform.cluster import Cluster
from tests.platform.control_plane import REPO_ROOT, wait_for
from tests.platform.images import Image

__all__ = [
    "CHART",
    "OPERATOR_PODS",
    "Release",
    "WorkloadError",
    "apply",
    "install_chart",
    "is_ready",
    "lock_store",
    "pods",
    "start_redis",
    "wait_default_service_account",
    "wait_ready_pods",
    "wait_store_ready",
]

CHART = REPO_ROOT / "charts" / "turnstile-operator"
OPERATOR_PODS = "app.kubernetes.io/name=turnstile-operator"


class WorkloadError(RuntimeError):
    """Something on the cluster did not come up; the message carries what it showed."""


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    """``kubectl apply`` of manifests given as dicts (JSON is YAML)."""
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )  # fmt: skip


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    data = cluster.control_plane.get_json("pods", "-n", namespace, "-l", selector)
    return list(data["items"]) if data else []


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def wait_ready_pods(
    cluster: Cluster, namespace: str, selector: str, count: int, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Wait until exactly ``count`` pods match and all of them are Ready; return them."""

    def probe() -> list[dict[str, Any]] | None:
        found = pods(cluster, namespace, selector)
        if len(found) == count and all(is_ready(p) for p in found):
            return found
        return None

    try:
        return wait_for(f"{count} Ready pods {selector} in {namespace}", probe, timeout, 0.5)
    except Exception:
        print(
            cluster.kubectl("-n", namespace, "get", "pods,events", "-o", "wide", check=False).stdout
        )
        print(cluster.node.logs(40))
        raise


def wait_default_service_account(cluster: Cluster, namespace: str) -> None:
    """Pods are refused until the controller-manager has made the namespace's ServiceAccount."""
    wait_for(
        f"serviceaccount default in {namespace}",
        lambda: cluster.control_plane.get_json("serviceaccount", "default", "-n", namespace),
        timeout=60,
    )


@dataclass(frozen=True)
class Release:
    namespace: str  # the operator's
    bots: str  # the namespace it watches
    ready_seconds: float  # helm install to the operator pod Ready


@contextlib.contextmanager
def install_chart(
    cluster: Cluster, operator: Image, *, replicas: int = 1, bots: str | None = None,
    namespace: str | None = None,
) -> Iterator[Release]:  # fmt: skip
    """``helm install`` the chart with the image built here; the operator watches ``bots``
    (created here); both namespaces are deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    namespace, bots = namespace or f"turnstile-{suffix}", bots or f"bots-{suffix}"
    cluster.kubectl("create", "namespace", bots)
    wait_default_service_account(cluster, bots)
    repository, tag = operator.name.removeprefix("docker.io/").split(":")
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
        shown = cp.kubectl("-n", namespace, "get", "pods,events", "-o", "wide", check=False)
        raise WorkloadError(
            f"helm install failed: {result.stdout}\n{result.stderr}\n{shown.stdout}"
        )
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


def password_secret(cluster: Cluster, namespace: str, name: str, password: str) -> None:
    """A Secret ``name`` (key ``password``) labelled for the operator's use."""
    apply(cluster, namespace, {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"turnstile.dev/store-secret": "true"}},
        "stringData": {"password": password},
    })  # fmt: skip


def start_redis(
    cluster: Cluster, redis: Image, namespace: str, *, password_secret: str | None = None,
    name: str = "redis",
) -> str:  # fmt: skip
    """A standalone Redis pod (Debian's redis-server) behind a Service, both ``name``; its
    ClusterIP (pods labelled ``app=<name>``).

    ``password_secret``: a Secret whose ``password`` key Redis requires (``requirepass``, from
    the env into a config file: never in a command line). The tier runs no cluster DNS, so stores
    name Services by ClusterIP, as bots then do.
    """
    args = ["--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no",
            "--save", "", "--appendonly", "no"]  # fmt: skip
    container: dict[str, Any] = {
        "name": "redis",
        "image": redis.name,
        "imagePullPolicy": "Never",
        "args": args,
        "ports": [{"containerPort": 6379}],
        "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    if password_secret is not None:
        # Into a config file, not onto redis-server's command line (where `ps` would show it).
        script = ("umask 077 && printf 'requirepass \"%s\"\\n' \"$PW\" > /tmp/redis.conf"
                  ' && exec redis-server /tmp/redis.conf "$@"')  # fmt: skip
        container["command"] = ["/bin/sh", "-c", script, "-"]
        container["env"] = [{"name": "PW", "valueFrom": {"secretKeyRef": {
            "name": password_secret, "key": "password"}}}]  # fmt: skip
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 6379}]},
        },
    )
    wait_ready_pods(cluster, namespace, f"app={name}", 1)
    service = cluster.control_plane.get_json("service", name, "-n", namespace)
    if service is None:
        raise WorkloadError(f"Service {name} in {namespace} vanished")
    return str(service["spec"]["clusterIP"])


def lock_store(
    name: str, redis_ip: str, prefix: str, configmap: str, *, password_secret: str | None = None,
    **spec: Any,
) -> dict[str, Any]:  # fmt: skip
    """A LockStore on the standalone Redis at ``redis_ip`` rendering into ``configmap``;
    ``password_secret``: the Secret (key ``password``) the Redis requires."""
    auth = {} if password_secret is None else {
        "passwordSecretRef": {"name": password_secret, "key": "password"}}  # fmt: skip
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
                **auth,
            },
            "configMap": {"name": configmap},
            **spec,
        },
    }


def wait_store_ready(
    cluster: Cluster, namespace: str, name: str, timeout: float = 120, *,
    condition: str = "Ready", kind: str = "lockstore",
) -> None:  # fmt: skip
    """Wait until the store's ``condition`` is True (``Ready`` needs its named workloads to
    exist: until then it is ``WorkloadNotFound``)."""

    def ready() -> bool:
        store = cluster.control_plane.get_json(kind, name, "-n", namespace)
        conditions = (store or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == condition and c["status"] == "True" for c in conditions)

    try:
        wait_for(f"{kind} {namespace}/{name} {condition}", ready, timeout=timeout, interval=1)
    except Exception:
        print(cluster.kubectl("-n", namespace, "get", kind, name, "-o", "yaml").stdout)
        raise


_SERVER = ["--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no",
           "--save", "", "--appendonly", "no"]  # fmt: skip


def redis_pod(
    redis: Image, name: str, app: str, port: int, *, args: list[str] | None = None,
    script: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A pod of Debian's redis-server (``args``) or of a shell ``script`` in the Redis image."""
    container: dict[str, Any] = {
        "name": "redis",
        "image": redis.name,
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


def pod_ips(cluster: Cluster, namespace: str, app: str, count: int) -> list[str]:
    """The addresses of ``count`` Ready pods ``app=APP``, in the order of their names."""
    found = wait_ready_pods(cluster, namespace, f"app={app}", count)
    return [p["status"]["podIP"] for p in sorted(found, key=lambda p: p["metadata"]["name"])]


def start_sentinel_group(cluster: Cluster, redis: Image, namespace: str) -> tuple[str, list[str]]:
    """A master, a replica and three sentinels (``mymaster``, quorum 2) as pods; the master's
    address and the sentinels'. The tier has no DNS: sentinels and stores use pod addresses."""
    apply(cluster, namespace, redis_pod(redis, "sentinel-master", "sentinel-master", 6379,
                                        args=_SERVER))  # fmt: skip
    (master,) = pod_ips(cluster, namespace, "sentinel-master", 1)
    sentinel_conf = (
        "printf 'port 26379\\nbind 0.0.0.0\\nprotected-mode no\\n"
        f"sentinel monitor mymaster {master} 6379 2\\n"
        "sentinel down-after-milliseconds mymaster 5000\\n' > /tmp/sentinel.conf"
        " && exec redis-sentinel /tmp/sentinel.conf"
    )
    apply(
        cluster,
        namespace,
        redis_pod(redis, "sentinel-replica", "sentinel-replica", 6379,
                  args=[*_SERVER, "--replicaof", master, "6379"]),
        *(redis_pod(redis, f"sentinel-{i}", "sentinel", 26379, script=sentinel_conf)
          for i in range(3)),
    )  # fmt: skip
    pod_ips(cluster, namespace, "sentinel-replica", 1)
    return master, pod_ips(cluster, namespace, "sentinel", 3)


def start_redis_cluster(cluster: Cluster, redis: Image, namespace: str) -> list[str]:
    """Six Redis pods made one Cluster (three masters, a replica each); their addresses."""
    # A 5 s node timeout (Redis's default is 15 s): a killed master's replica takes over sooner.
    args = [*_SERVER, "--cluster-enabled", "yes", "--cluster-config-file", "/tmp/nodes.conf",
            "--cluster-node-timeout", "5000"]  # fmt: skip
    nodes = [redis_pod(redis, f"cluster-{i}", "cluster", 6379, args=args) for i in range(6)]
    apply(cluster, namespace, *nodes)
    ips = pod_ips(cluster, namespace, "cluster", 6)
    cluster.kubectl(
        "-n", namespace, "exec", "cluster-0", "--", "redis-cli", "--cluster", "create",
        *(f"{ip}:6379" for ip in ips), "--cluster-replicas", "1", "--cluster-yes",
        timeout=120,
    )  # fmt: skip

    def cluster_ok() -> bool:
        info = cluster.kubectl(
            "-n", namespace, "exec", "cluster-0", "--", "redis-cli", "cluster", "info", check=False
        ).stdout
        return "cluster_state:ok" in info

    wait_for("cluster_state:ok", cluster_ok, timeout=60, interval=1)
    return ips


def cluster_master_pod(cluster: Cluster, namespace: str, key: str) -> str:
    """The name of the Cluster pod (:func:`start_redis_cluster`) serving ``key`` as master."""
    def cli(*args: str) -> str:
        return cluster.kubectl("-n", namespace, "exec", "cluster-0", "--", "redis-cli",
                               *args).stdout  # fmt: skip

    slot = int(cli("cluster", "keyslot", key).strip())
    by_ip = {p["status"]["podIP"]: p["metadata"]["name"]
             for p in pods(cluster, namespace, "app=cluster")}  # fmt: skip
    for line in cli("cluster", "nodes").splitlines():
        fields = line.split()
        if len(fields) < 9 or "master" not in fields[2].split(","):
            continue
        for span in fields[8:]:
            first, _, last = span.partition("-")
            if first.isdigit() and int(first) <= slot <= int(last or first):
                return by_ip[fields[1].split(":")[0]]
    raise WorkloadError(f"no master serves slot {slot} of {key!r}")
