"""One real node: it registers Ready, runs pods whose logs and exec work, and replaces pods on
a rollout (what a Deployment rollout is for a bot: old pods gone, new pods running the change)."""

from __future__ import annotations

import subprocess
import urllib.request

from tests.node.conftest import bot_deployment, busybox_container
from tests.platform.cluster import Cluster
from tests.platform.control_plane import wait_for
from tests.platform.images import Image
from tests.platform.node import FENCE, NODE_NAME, POD_SUBNET
from tests.platform.workloads import apply, pods, wait_default_service_account, wait_ready_pods


def test_node_registers_ready_with_containerd(node_cluster: Cluster) -> None:
    node = node_cluster.control_plane.get_json("node", NODE_NAME)
    assert node is not None
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", ready
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "Hostname", "address": NODE_NAME} in node["status"]["addresses"]


def test_nothing_of_the_tier_is_routed_off_this_machine(node_cluster: Cluster) -> None:
    """A pod's packet for an address outside the pod network, and this host's for a Service
    address kube-proxy has not translated, are refused instead of following the default route
    out. Checked on the rules (the fence is in place while the node runs), not by sending such
    a packet: if the fence were missing, that packet would leave the machine."""
    for chain, *match in FENCE:
        argv = ["iptables", "-w", "5", "-C", chain, *match]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
        assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"


def test_pod_runs_and_its_logs_and_exec_work(
    node_cluster: Cluster, node_namespace: str, busybox: Image
) -> None:
    wait_default_service_account(node_cluster, node_namespace)
    apply(node_cluster, node_namespace, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "labels": {"app": "hello"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [busybox_container(busybox, "echo hello-from-a-pod; exec sleep 3600")],
        },
    })  # fmt: skip
    (pod,) = wait_ready_pods(node_cluster, node_namespace, "app=hello", 1)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["podIP"].startswith(POD_SUBNET.rsplit(".", 2)[0])

    logs = wait_for(
        "the pod's log line",
        lambda: (
            "hello-from-a-pod"
            in node_cluster.kubectl("-n", node_namespace, "logs", "hello", check=False).stdout
        ),
        timeout=30,
    )
    assert logs
    out = node_cluster.kubectl(
        "-n", node_namespace, "exec", "hello", "--", "/bin/sh", "-c", "echo $((6 * 7)); hostname"
    ).stdout.split()
    assert out == ["42", "hello"]


def test_service_reaches_a_pod_from_another_pod_and_from_the_host(
    node_cluster: Cluster, node_namespace: str, busybox: Image
) -> None:
    wait_default_service_account(node_cluster, node_namespace)
    server = busybox_container(
        busybox,
        "mkdir -p /tmp/www && echo served-by-$(hostname) > /tmp/www/index.html "
        "&& exec httpd -f -p 8080 -h /tmp/www",
        ports=[{"containerPort": 8080}],
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )
    apply(node_cluster, node_namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"terminationGracePeriodSeconds": 1, "containers": [server]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "client", "labels": {"app": "client"}},
         "spec": {"terminationGracePeriodSeconds": 1,
                  "containers": [busybox_container(busybox, "exec sleep 3600")]}},
    )  # fmt: skip
    wait_ready_pods(node_cluster, node_namespace, "app=web", 1)
    wait_ready_pods(node_cluster, node_namespace, "app=client", 1)
    service = node_cluster.control_plane.get_json("service", "web", "-n", node_namespace)
    assert service is not None
    cluster_ip = service["spec"]["clusterIP"]

    def fetch_from(pod: str) -> str | None:
        out = node_cluster.kubectl(
            "-n", node_namespace, "exec", pod, "--", "/bin/sh", "-c",
            f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {cluster_ip} 80',
            check=False,
        ).stdout  # fmt: skip
        lines = out.strip().splitlines()
        return lines[-1] if lines and lines[0].startswith("HTTP/1.") else None

    # kube-proxy writes the Service's rules a moment after the endpoints appear.
    got = wait_for("the Service from a pod", lambda: fetch_from("client"), timeout=60, interval=1)
    assert got == "served-by-web"
    # Hairpin: the pod behind the Service reaches itself through it.
    assert fetch_from("web") == "served-by-web"

    def fetch_on_host() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=3) as resp:
                return str(resp.read().decode().strip())
        except OSError:
            return None

    assert wait_for("the Service from the host", fetch_on_host, timeout=30, interval=1) == (
        "served-by-web"
    )


def test_deployment_rollout_replaces_its_pods(
    node_cluster: Cluster, node_namespace: str, busybox: Image
) -> None:
    """A rollout is proven by pods: every old pod is gone and every new one runs the change."""
    wait_default_service_account(node_cluster, node_namespace)

    def deployment(version: str) -> dict[str, object]:
        return bot_deployment(busybox_container(
            busybox, "echo started $VERSION; exec sleep 3600",
            env=[{"name": "VERSION", "value": version}],
        ))  # fmt: skip

    apply(node_cluster, node_namespace, deployment("one"))
    old = wait_ready_pods(node_cluster, node_namespace, "app=bot", 2)
    old_uids = {p["metadata"]["uid"] for p in old}

    apply(node_cluster, node_namespace, deployment("two"))
    node_cluster.kubectl(
        "-n", node_namespace, "rollout", "status", "deployment/bot", "--timeout=120s",
        timeout=150,
    )  # fmt: skip

    def replaced() -> list[dict[str, object]] | None:
        now = pods(node_cluster, node_namespace, "app=bot")
        uids = {p["metadata"]["uid"] for p in now}
        return now if len(now) == 2 and not uids & old_uids else None

    new = wait_for("the old pods gone, two new ones", replaced, timeout=60, interval=0.5)
    for pod in new:
        name = str(pod["metadata"]["name"])  # type: ignore[index]
        env = node_cluster.kubectl(
            "-n", node_namespace, "exec", name, "--", "/bin/sh", "-c", "echo $VERSION"
        ).stdout.strip()
        assert env == "two", (name, env)
