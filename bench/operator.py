"""Operator benchmark: apply-to-ConfigMap latency, cold-start reconcile of N stores, and RSS.

Starts a real Redis and a real control plane (``tests.platform``), installs ``crds/`` and runs
the operator as a subprocess (``python -m turnstile.operator``, the same entry point as a Pod).

1. **Latency**: create one store at a time (``--samples``, default 20) and time from the create
   call to its section being in its ConfigMap (the API is polled every 10 ms in-process).
2. **Cold start**: with the operator stopped, create ``--stores`` stores (default 500: a
   LockStore and a TimerStore per ConfigMap), start the operator and time until every store
   is Ready and every section rendered.
3. **Memory**: the operator's resident set size after the cold start settles, and the peak
   seen while it worked.

Targets (docs/bench-operator.md): median <= 1 s; 500 stores <= 60 s; <= 150 MB resident.

    python -m bench.operator [--stores 500] [--samples 20] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from bench._common import percentile
from tests.k8s.test_crd_validation import install_crds
from tests.platform.control_plane import ControlPlane
from tests.platform.operator_process import OperatorProcess
from tests.platform.redis_servers import RedisServer

GROUP, VERSION = "turnstile.dev", "v1alpha1"
PLURALS = {"LockStore": "lockstores", "TimerStore": "timerstores"}
SECTIONS = {"LockStore": "lock_store", "TimerStore": "timer_store"}


def _store(kind: str, name: str, namespace: str, redis: RedisServer, cm: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "redis": {"host": redis.host, "port": redis.port},
            "configMap": {"name": cm},
        },
    }


class Api:
    def __init__(self, kubeconfig: Path) -> None:
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        client.configuration.connection_pool_maxsize = 16
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def create(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURALS[body["kind"]], body
        )

    def section(self, namespace: str, cm: str, section: str) -> bool:
        try:
            got = self.core.read_namespaced_config_map(cm, namespace)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        text = (got.data or {}).get("endpoints.yml") or ""
        return section in (yaml.safe_load(text) or {})

    def ready_count(self, namespace: str) -> int:
        ready = 0
        for plural in PLURALS.values():
            items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            for item in items["items"]:
                for c in (item.get("status") or {}).get("conditions") or []:
                    if c["type"] == "Ready" and c["status"] == "True":
                        ready += 1
        return ready

    def rendered_count(self, namespace: str) -> int:
        count = 0
        for cm in self.core.list_namespaced_config_map(namespace).items:
            data = yaml.safe_load((cm.data or {}).get("endpoints.yml") or "") or {}
            count += sum(1 for s in SECTIONS.values() if s in data)
        return count


def measure_latency(api: Api, cp: ControlPlane, redis: RedisServer, samples: int) -> list[float]:
    namespace = "bench-latency"
    cp.kubectl("create", "namespace", namespace)
    op = OperatorProcess(cp.kubeconfig, namespaces=[namespace], recheck_interval=30,
                         name="bench-latency")
    times: list[float] = []
    with op:
        time.sleep(1.0)  # let the watch settle
        for i in range(samples):
            kind = "LockStore" if i % 2 == 0 else "TimerStore"
            cm = f"lat-{i}"
            started = time.perf_counter()
            api.create(_store(kind, f"lat-{i}", namespace, redis, cm))
            deadline = started + 30
            while not api.section(namespace, cm, SECTIONS[kind]):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"store lat-{i} was not rendered within 30 s:\n{op.tail()}")
                time.sleep(0.01)
            times.append(time.perf_counter() - started)
            time.sleep(0.2)
    return times


def measure_cold_start(
    api: Api, cp: ControlPlane, redis: RedisServer, stores: int
) -> dict[str, float]:
    namespace = "bench-cold"
    cp.kubectl("create", "namespace", namespace)
    created = time.perf_counter()
    for i in range(stores):
        kind = "LockStore" if i % 2 == 0 else "TimerStore"
        api.create(_store(kind, f"s-{i}", namespace, redis, f"cm-{i // 2}"))
    create_s = time.perf_counter() - created
    op = OperatorProcess(cp.kubeconfig, namespaces=[namespace], recheck_interval=30,
                         name="bench-cold")
    peak = 0
    stop = threading.Event()

    def sample_rss() -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(OSError):
                peak = max(peak, op.rss_bytes())
            time.sleep(0.2)

    started = time.perf_counter()
    op.start(wait=False)
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    ready_at = rendered_at = None
    deadline = started + 300
    try:
        while time.perf_counter() < deadline and (ready_at is None or rendered_at is None):
            if rendered_at is None and api.rendered_count(namespace) >= stores:
                rendered_at = time.perf_counter() - started
            if ready_at is None and api.ready_count(namespace) >= stores:
                ready_at = time.perf_counter() - started
            time.sleep(0.5)
        if ready_at is None or rendered_at is None:
            raise SystemExit(f"not all {stores} stores reconciled within 300 s:\n{op.tail()}")
        time.sleep(10)  # settle: one more quiet period, then the steady-state RSS
        settled = op.rss_bytes()
    finally:
        stop.set()
        sampler.join(timeout=2)
        op.stop()
    return {
        "stores": stores,
        "create_s": create_s,
        "all_rendered_s": rendered_at,
        "all_ready_s": ready_at,
        "rss_settled_mb": settled / 2**20,
        "rss_peak_mb": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=500)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with RedisServer(name="bench-operator") as redis, ControlPlane() as cp:
        install_crds(cp)
        api = Api(cp.kubeconfig)
        latency = measure_latency(api, cp, redis, args.samples)
        cold = measure_cold_start(api, cp, redis, args.stores)
    results = {
        "latency": {
            "samples": len(latency),
            "median_s": statistics.median(latency),
            "p95_s": percentile(latency, 0.95),
            "max_s": max(latency),
        },
        "cold_start": cold,
    }
    print(json.dumps(results, indent=2))
    median, p95 = results["latency"]["median_s"], results["latency"]["p95_s"]
    print(
        f"\napply -> ConfigMap section: median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
        f"(target median <= 1000 ms)\n"
        f"{cold['stores']} stores from cold start: all rendered in {cold['all_rendered_s']:.1f} s,"
        f" all Ready in {cold['all_ready_s']:.1f} s (target <= 60 s)\n"
        f"operator RSS: {cold['rss_settled_mb']:.0f} MB settled, {cold['rss_peak_mb']:.0f} MB "
        f"peak (target <= 150 MB)",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
