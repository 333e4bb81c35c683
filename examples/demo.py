"""``make demo``: every part of Turnstile working together on this machine, then torn down.

1. Redis in all three modes: a password-protected standalone server, a 6-node Cluster and a
   Sentinel group, as real processes on loopback ports.
2. A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).
3. The CRDs, the sample stores from ``examples/`` (their Redis addresses pointed at the local
   servers; nothing else changed) and a ``bot`` Deployment that the standard LockStore rolls.
4. The operator as a subprocess: stores turn Ready, ConfigMaps get their ``endpoints.yml``.
5. ``turnstile check`` reads a rendered ``endpoints.yml`` the way a bot pod would (password from
   the environment) and proves each store works; then a ``keyPrefix`` change rolls the bot.

Every step is real; nothing is printed that was not read back from Redis or the API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.platform.control_plane import ControlPlane
from tests.platform.operator_process import OperatorProcess
from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"
PASSWORD = "demo-" + os.urandom(6).hex()  # never printed: the demo shows it stays out of sight
BOT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "bot", "labels": {"app": "bot"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "bot"}},
        "template": {
            "metadata": {"labels": {"app": "bot"}},
            "spec": {
                "containers": [
                    {
                        "name": "rasa",
                        "image": "rasa/rasa-pro:3.21.0",
                        # turnstile-rasa is `rasa` with Turnstile's timer manager installed:
                        # pending session timers survive the rollouts shown below.
                        "command": ["turnstile-rasa"],
                        "args": ["run", "--endpoints", "/app/config/endpoints.yml"],
                    }
                ]
            },
        },
    },
}


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {line}")


def local_manifests(
    standalone: RedisServer, cluster: RedisCluster, sentinel: SentinelGroup
) -> list[dict[str, Any]]:
    """The sample manifests with their Redis addresses pointed at the local processes."""
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
                    redis.update(host=standalone.host, port=standalone.port)
                elif mode == "cluster":
                    redis["endpoints"] = cluster.endpoints[:3]
                else:
                    redis["endpoints"] = sentinel.endpoints
                    redis["sentinelService"] = sentinel.service_name
                if doc["kind"] == "LockStore" and mode == "standard":
                    doc["spec"]["rollout"] = {
                        "workloads": [{"kind": "Deployment", "name": "bot"}],
                        "injectEnv": True,
                    }
            docs.append(doc)
    return docs


def apply(cp: ControlPlane, docs: list[dict[str, Any]]) -> None:
    cp.kubectl("-n", NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def wait_ready(cp: ControlPlane, timeout: float = 120.0) -> None:
    proc = cp.kubectl(
        "-n", NAMESPACE, "wait", "--for=condition=Ready", "lockstores,timerstores", "--all",
        f"--timeout={int(timeout)}s", check=False, timeout=timeout + 10,
    )
    if proc.returncode != 0:
        show(cp.kubectl("-n", NAMESPACE, "get", "lockstores,timerstores", "-o", "yaml").stdout)
        raise SystemExit(f"stores did not become Ready within {timeout:g}s:\n{proc.stderr}")


def replica_sets(cp: ControlPlane) -> list[str]:
    out = cp.kubectl("-n", NAMESPACE, "get", "rs", "-l", "app=bot", "-o", "json").stdout
    return sorted(item["metadata"]["name"] for item in json.loads(out)["items"])


def deployment(cp: ControlPlane) -> dict[str, Any]:
    out = cp.kubectl("-n", NAMESPACE, "get", "deployment", "bot", "-o", "json").stdout
    return dict(json.loads(out))


def checksum(cp: ControlPlane) -> str | None:
    annotations = deployment(cp)["spec"]["template"]["metadata"].get("annotations") or {}
    value = annotations.get("turnstile.dev/config-checksum")
    return None if value is None else str(value)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")


def main() -> int:  # noqa: PLR0915 -- the demo script, step after step as the reader follows it
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        step("Redis in three modes (real redis-server / redis-sentinel on loopback)")
        standalone = stack.enter_context(RedisServer(password=PASSWORD, name="demo-standalone"))
        cluster = stack.enter_context(RedisCluster())
        sentinel = stack.enter_context(SentinelGroup())
        show(f"standalone  {standalone.endpoint}  PING -> "
             f"{standalone.execute('PING')}  (password protected)")
        info = cluster.cluster_info(cluster.nodes[0])
        show(f"cluster     {', '.join(cluster.endpoints)}")
        show(f"            cluster_state:{info['cluster_state']} "
             f"slots_assigned:{info['cluster_slots_assigned']} "
             f"masters:{len(cluster.masters())} replicas:{len(cluster.replicas())}")
        master = sentinel.current_master()
        show(f"sentinel    {', '.join(sentinel.endpoints)}  "
             f"master of {sentinel.service_name!r}: {master[0]}:{master[1]}")

        step("Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)")
        cp = stack.enter_context(ControlPlane())
        show(f"API server {cp.server}")
        show(cp.kubectl("get", "--raw", "/version").stdout)

        step("CRDs, sample stores from examples/ (Redis addresses pointed at the local servers)")
        show(cp.kubectl("apply", "-f", str(ROOT / "crds")).stdout)
        cp.kubectl("create", "namespace", NAMESPACE)
        cp.kubectl("-n", NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump(BOT))
        docs = local_manifests(standalone, cluster, sentinel)
        apply(cp, docs)
        show(cp.kubectl("-n", NAMESPACE, "get", "lockstores,timerstores").stdout)

        step("The operator reconciles them")
        operator = stack.enter_context(
            OperatorProcess(cp.kubeconfig, namespaces=[NAMESPACE], name="demo-operator")
        )
        wait_ready(cp)
        show(cp.kubectl("-n", NAMESPACE, "get", "lockstores,timerstores", "-o", "wide").stdout)
        status = json.loads(
            cp.kubectl("-n", NAMESPACE, "get", "lockstore", "sentinel-locks", "-o", "json").stdout
        )["status"]
        show("sentinel-locks status: " + json.dumps(
            {k: v for k, v in status.items() if k != "conditions"}, sort_keys=True))

        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="turnstile-demo-"))
        endpoints_file = Path(workdir) / "endpoints.yml"
        for name in ("bot-endpoints", "cluster-bot-endpoints", "sentinel-bot-endpoints"):
            data = json.loads(
                cp.kubectl("-n", NAMESPACE, "get", "configmap", name, "-o", "json").stdout
            )["data"]["endpoints.yml"]
            step(f"ConfigMap {name}: endpoints.yml as the operator rendered it")
            show(data)
            if name == "bot-endpoints":
                endpoints_file.write_text(data)
                assert PASSWORD not in data, "a password reached a ConfigMap"

        step("turnstile check: a bot pod's view of bot-endpoints (passwords from the environment)")
        env = dict(os.environ, TURNSTILE_LOCK_STORE_PASSWORD=PASSWORD,
                   TURNSTILE_TIMER_STORE_PASSWORD=PASSWORD)
        check = subprocess.run(
            [sys.executable, "-m", "turnstile.cli", "check", str(endpoints_file)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
        show(check.stdout + check.stderr)

        step("Rollout: the bot Deployment carries the checksum of what it loads")
        wait_for(lambda: checksum(cp) is not None, 60, "the operator's checksum on the bot")
        wait_for(lambda: len(replica_sets(cp)) >= 2, 60, "the checksum's ReplicaSet")
        first = checksum(cp)
        before = replica_sets(cp)
        template = deployment(cp)["spec"]["template"]
        show(f"pod-template annotation turnstile.dev/config-checksum: {first}")
        show("injected env: " + json.dumps(
            [e["name"] for e in template["spec"]["containers"][0].get("env", [])]))
        show(f"ReplicaSets: {before}  (the Deployment's own, then the one for the checksum)")
        cp.kubectl("-n", NAMESPACE, "patch", "lockstore", "bot-locks", "--type=merge",
                   "-p", '{"spec":{"redis":{"keyPrefix":"botv2"}}}')
        show("patched bot-locks spec.redis.keyPrefix: bot -> botv2")
        wait_for(lambda: checksum(cp) not in (None, first), 60, "a new checksum")
        wait_for(lambda: len(replica_sets(cp)) > len(before), 60, "a new ReplicaSet")
        time.sleep(3)  # long enough for a second rollout to show, if there were one
        after = replica_sets(cp)
        show(f"checksum now {checksum(cp)}")
        show(f"ReplicaSets: {after}  ({len(after) - len(before)} new for one change)")

        step("Operator log (last lines, routine re-checks left out)")
        lines = [line for line in operator.logs().splitlines() if "succeeded." not in line]
        show("\n".join(lines[-12:]))
        step(f"Done in {time.monotonic() - started:.0f}s; stopping everything the demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
