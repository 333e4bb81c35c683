"""``make demo``: Turnstile on a real Kubernetes cluster on this machine, with real Rasa pods.

1. Images, made here without a registry (cached by what goes into them): the operator from the
   repo's ``Dockerfile``, Debian's Redis, and a Rasa 3.6.21 bot image with Turnstile's wheel.
2. A cluster on this machine: etcd, kube-apiserver, controller-manager and one real node
   (containerd, kubelet, kube-scheduler, kube-proxy), pod traffic fenced to this machine.
3. The operator installed by its Helm chart, running as a pod.
4. Redis as pods in all three modes: standalone (password from a Secret), a Sentinel group, a
   6-node Cluster; the sample stores of ``examples/`` on them (addresses pointed at the pods),
   all Ready, and the ``endpoints.yml`` the operator renders.
5. Two Rasa pods (``turnstile-rasa run``) loading that file and the password the operator
   injects, answering one conversation through their Service.
6. A ``keyPrefix`` change while messages flow: the pods are replaced once, and every message is
   counted in the trackers (lost, doubled, handled two at once).

Everything is then stopped and the host put back as it was. Runs as root (the node).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.platform import images
from tests.platform.cluster import Cluster
from tests.platform.control_plane import wait_for
from tests.platform.rasa_bots import (
    Stream,
    account,
    action_server,
    action_url,
    bot_deployment,
    bot_service,
    endpoints_configmap,
    model_configmap,
    new_session,
    post,
    replicasets,
    service_url,
    wait_pin,
    wait_rolled,
)
from tests.platform.rasa_image import rasa_bot_image
from tests.platform.workloads import (
    apply,
    install_chart,
    is_ready,
    pods,
    start_redis,
    start_redis_cluster,
    start_sentinel_group,
    wait_ready_pods,
)
from tests.rasa_server.servers import VENV as RASA_VENV
from tests.rasa_server.servers import train_bot

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"
PASSWORD = "demo-" + os.urandom(6).hex()  # never printed: the demo shows it stays out of sight
STARTED = time.monotonic()


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m  [{time.monotonic() - STARTED:.0f}s]", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {line}", flush=True)


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    """Say what a long step is doing before it starts, and how long it took."""
    print(f"   {what} ...", flush=True)
    began = time.monotonic()
    yield
    print(f"   {what}: {time.monotonic() - began:.0f}s", flush=True)


def kubectl(cluster: Cluster, *args: str) -> str:
    return cluster.kubectl(*args).stdout


def sample_stores(redis_ip: str, sentinels: list[str], nodes: list[str]) -> list[dict[str, Any]]:
    """``examples/*.yaml`` with their Redis addresses pointed at the pods (the tier has no DNS),
    the bot's LockStore rolling the ``bot`` Deployment with the env injected."""
    docs: list[dict[str, Any]] = []
    for name in ("standard.yaml", "cluster.yaml", "sentinel.yaml"):
        for doc in yaml.safe_load_all((ROOT / "examples" / name).read_text()):
            if not doc:
                continue
            if doc["kind"] == "Secret":
                doc["stringData"] = {"password": PASSWORD}
            elif doc["kind"] in ("LockStore", "TimerStore"):
                redis = doc["spec"]["redis"]
                mode = redis.get("deploymentMode", "standard")
                if mode == "standard":
                    redis["host"] = redis_ip
                elif mode == "cluster":
                    redis["endpoints"] = [f"{ip}:6379" for ip in nodes[:3]]
                else:
                    redis["endpoints"] = [f"{ip}:26379" for ip in sentinels]
                if doc["kind"] == "LockStore" and mode == "standard":
                    doc["spec"]["rollout"] = {
                        "workloads": [{"kind": "Deployment", "name": "bot"}],
                        "injectEnv": True,
                    }
            docs.append(doc)
    return docs


def main() -> int:  # noqa: PLR0915 -- the demo script, step after step as the reader follows it
    if os.geteuid() != 0:
        print("make demo runs a Kubernetes node (kubelet, containerd): run it as root")
        return 1
    with contextlib.ExitStack() as stack:
        step("Images, made on this machine (no registry; cached by their inputs)")
        with timed("Debian base image (debootstrap)"):
            base = images.python_base_image()
        with images.DockerBuilder() as builder:
            with timed("operator image from the repo's Dockerfile"):
                operator = images.operator_image(base, builder)
            with timed("Redis image (Debian's redis-server and redis-sentinel)"):
                redis = images.redis_image(base, builder)
        with timed("Rasa 3.6.21 bot image with Turnstile's wheel"):
            bot_image = rasa_bot_image(base, RASA_VENV)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="turnstile-demo-")))
        with timed("the bot trained with `rasa train`"):
            model = train_bot(workdir, python=RASA_VENV / "bin" / "python")
        for image in (operator, redis, bot_image):
            show(image.name)

        step("A Kubernetes cluster on this machine: control plane + one node running pods")
        cluster = Cluster()
        with timed("etcd, kube-apiserver, controller-manager, containerd, kubelet, kube-proxy"):
            cluster.start()
        stack.callback(cluster.stop)
        show(kubectl(cluster, "get", "nodes", "-o", "wide"))
        with timed("images imported into the node"):
            for image in (operator, redis, bot_image):
                cluster.load_image(image)

        step("The operator, installed by its Helm chart")
        release = stack.enter_context(
            install_chart(cluster, operator, namespace="turnstile-system", bots=NAMESPACE)
        )
        show(f"operator pod Ready {release.ready_seconds:.0f}s after helm install")
        show(kubectl(cluster, "-n", release.namespace, "get", "pods", "-o", "wide"))

        step("Redis as pods: standalone (password from a Secret), Sentinel group, 6-node Cluster")
        cluster.kubectl("-n", NAMESPACE, "create", "secret", "generic", "redis-auth",
                        f"--from-literal=password={PASSWORD}")  # fmt: skip
        cluster.kubectl("-n", NAMESPACE, "label", "secret", "redis-auth",
                        "turnstile.dev/store-secret=true")  # fmt: skip
        with timed("Redis pods"):
            redis_ip = start_redis(cluster, redis, NAMESPACE, password_secret="redis-auth")
            _, sentinels = start_sentinel_group(cluster, redis, NAMESPACE)
            nodes = start_redis_cluster(cluster, redis, NAMESPACE)
        show(kubectl(cluster, "-n", NAMESPACE, "get", "pods", "-o", "wide"))

        step("The sample stores of examples/, pointed at those pods")
        # The bot's own sections first (Rasa's Redis tracker store, its action server): the
        # operator adds its sections to them and keeps them as they are.
        apply(cluster, NAMESPACE, model_configmap(model), *action_server(bot_image))
        apply(cluster, NAMESPACE, endpoints_configmap(
            "bot-endpoints", redis_ip, action_url(cluster, NAMESPACE),
            password_env="TURNSTILE_LOCK_STORE_PASSWORD"))  # fmt: skip
        apply(cluster, NAMESPACE, *sample_stores(redis_ip, sentinels, nodes))
        with timed("every store Ready (the operator runs each store's operations on its Redis)"):
            cluster.kubectl(
                "-n", NAMESPACE, "wait", "--for=condition=ConfigRendered",
                "lockstores,timerstores", "--all", "--timeout=180s", timeout=200,
            )  # fmt: skip
        show(kubectl(cluster, "-n", NAMESPACE, "get", "lockstores,timerstores"))
        configmap = kubectl(cluster, "-n", NAMESPACE, "get", "configmap", "bot-endpoints",
                            "-o", "json")  # fmt: skip
        rendered = json.loads(configmap)["data"]["endpoints.yml"]
        assert PASSWORD not in rendered, "a password reached a ConfigMap"
        step("ConfigMap bot-endpoints: the bot's sections and the operator's")
        show(rendered)

        step("Two Rasa pods loading it (turnstile-rasa run: no pod starts without its lock store)")
        apply(cluster, NAMESPACE, bot_deployment(bot_image, "bot-endpoints"), bot_service())
        with timed("the bot rolled onto the rendered file, 2 pods Ready"):
            wait_rolled(cluster, NAMESPACE, "bot", wait_pin(cluster, NAMESPACE, "bot"))
        cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", "lockstores,timerstores",
                        "--all", "--timeout=120s", timeout=140)  # fmt: skip
        show(kubectl(cluster, "-n", NAMESPACE, "get", "lockstores,timerstores", "-o", "wide"))
        show(kubectl(cluster, "-n", NAMESPACE, "get", "pods", "-l", "app=bot", "-o", "wide"))
        name = pods(cluster, NAMESPACE, "app=bot")[0]["metadata"]["name"]
        log = cluster.kubectl("-n", NAMESPACE, "logs", name, "-c", "rasa").stdout
        show("\n".join(line for line in log.splitlines() if line.startswith("turnstile-rasa")))
        url = service_url(cluster, NAMESPACE)

        step(f"One conversation through the Service {url}, two messages at a time")

        async def converse() -> list[Any]:
            async with new_session() as session:
                sent = []
                for i in range(0, 6, 2):
                    sent += await asyncio.gather(
                        post(session, url, "demo-user", f"m{i}"),
                        post(session, url, "demo-user", f"m{i + 1}"),
                    )
            return sent

        for m in asyncio.run(converse()):
            show(f"note {m.tag} -> {m.replies or m.error}")

        step("A keyPrefix change while messages flow on 4 conversations")
        before = {p["metadata"]["uid"] for p in pods(cluster, NAMESPACE, "app=bot")}
        sets_before = {r["metadata"]["name"] for r in replicasets(cluster, NAMESPACE, "app=bot")}

        async def roll() -> tuple[Stream, float]:
            async with Stream(url, [f"demo-{i}" for i in range(4)]) as stream:
                await asyncio.sleep(5)
                changed = time.monotonic()
                await asyncio.to_thread(
                    cluster.kubectl, "-n", NAMESPACE, "patch", "lockstore", "bot-locks",
                    "--type=merge", "-p", '{"spec":{"redis":{"keyPrefix":"botv2"}}}',
                )  # fmt: skip
                print("   patched bot-locks spec.redis.keyPrefix: bot -> botv2", flush=True)

                def replaced() -> bool:
                    now = pods(cluster, NAMESPACE, "app=bot")
                    fresh = [p for p in now if p["metadata"]["uid"] not in before]
                    return len(now) == 2 and len(fresh) == 2 and all(is_ready(p) for p in fresh)

                await asyncio.to_thread(wait_for, "the bot pods replaced", replaced, 300, 0.5)
                took = time.monotonic() - changed
                await asyncio.sleep(5)
            return stream, took

        stream, took = asyncio.run(roll())
        counts = asyncio.run(account(url, stream.sent))
        sets_after = {r["metadata"]["name"] for r in replicasets(cluster, NAMESPACE, "app=bot")}
        show(f"messages sent {counts.sent}, answered {counts.answered}, "
             f"refused {len(counts.refused)}")  # fmt: skip
        show(f"in the trackers: lost {len(counts.lost)}, doubled {len(counts.duplicated)}, "
             f"handled two at once or out of order {len(counts.concurrent)}")  # fmt: skip
        show(f"ReplicaSets new for the change: {len(sets_after - sets_before)}; pods replaced: "
             f"{len(before)}; change -> last new pod Ready {took:.0f}s")  # fmt: skip
        wait_ready_pods(cluster, NAMESPACE, "app=bot", 2)
        show(kubectl(cluster, "-n", NAMESPACE, "get", "lockstore", "bot-locks", "-o", "wide"))
        bad = counts.lost or counts.duplicated or counts.concurrent or counts.refused
        step(f"Done in {time.monotonic() - STARTED:.0f}s; stopping everything the demo started")
    if bad:
        print("the demo saw messages lost, doubled, refused or handled two at once", bad)
        return 1
    print("the host is as it was before the demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
