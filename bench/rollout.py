"""How long from a config change to the new ReplicaSet: ``python -m bench.rollout``.

Starts a real control plane (kube-apiserver, etcd, kube-controller-manager), a real Redis, the
operator as a subprocess, one LockStore that targets one Deployment, then changes the store's
``keyPrefix`` N times (default 20). For each change it measures the time from the API server
accepting the change (``kubectl patch`` returned) to the moment a watch sees the Deployment's
new ReplicaSet, and then waits out the settle window plus a margin to check that the change
caused exactly one ReplicaSet. Writes ``docs/bench-rollout.md``.

The figure is dominated by the debounce settle window (``TURNSTILE_ROLLOUT_SETTLE_SECONDS``,
1.5 s by default) by design: the operator waits for the inputs to be quiet before rolling.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.k8s.test_rollout import (
    SETTLE,
    Operator,
    apply,
    deployment,
    install_crds,
    replica_sets,
    secret,
    store,
    template_checksum,
    wait_for,
)
from tests.platform.control_plane import ControlPlane
from tests.platform.redis_servers import RedisServer

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "bench-rollout.md"
NS = "bench-rollout"


class ReplicaSetWatch:
    """``kubectl get rs --watch`` in a thread: when each ReplicaSet name was first seen."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        argv = [str(cp.binary("kubectl")), "--kubeconfig", str(cp.kubeconfig), "-n", namespace,
                "get", "replicasets", "--watch", "-o", "name"]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cp.env()
        )
        self.first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            name = line.strip().removeprefix("replicaset.apps/")
            now = time.monotonic()
            with self._lock:
                self.first_seen.setdefault(name, now)

    def seen_after(self, t0: float) -> list[tuple[str, float]]:
        with self._lock:
            return sorted((n, t) for n, t in self.first_seen.items() if t >= t0)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


def run(samples: int) -> tuple[list[float], list[int]]:
    latencies: list[float] = []
    extras: list[int] = []
    with ControlPlane() as cp, RedisServer(name="bench-rollout") as redis:
        install_crds(cp)
        cp.kubectl("create", "namespace", NS)
        rollout = {"workloads": [{"kind": "Deployment", "name": "bot"}]}
        apply(cp, secret(NS, "pw"), deployment(NS, "bot"))
        apply(cp, store("LockStore", "locks", NS, redis, prefix="p0", rollout=rollout))
        operator = Operator(cp, [NS])
        operator.start()
        watch = ReplicaSetWatch(cp, NS)
        try:
            wait_for("the first checksum", lambda: template_checksum(cp, NS, "bot"), 90)
            wait_for("2 ReplicaSets", lambda: len(replica_sets(cp, NS, "bot")) == 2, 90)
            time.sleep(SETTLE + 2)
            for i in range(1, samples + 1):
                before = len(replica_sets(cp, NS, "bot"))
                patch = {"spec": {"redis": {"keyPrefix": f"p{i}"}}}
                cp.kubectl("-n", NS, "patch", "lockstore", "locks", "--type=merge",
                           "-p", json.dumps(patch))  # fmt: skip
                t0 = time.monotonic()
                new = wait_for("the new ReplicaSet", lambda t0=t0: watch.seen_after(t0), 60)
                latencies.append(new[0][1] - t0)
                time.sleep(SETTLE + 2.5)
                extras.append(len(replica_sets(cp, NS, "bot")) - before - 1)
                print(f"change {i:2d}: new ReplicaSet after {latencies[-1]:.3f}s, "
                      f"extra ReplicaSets: {extras[-1]}", flush=True)  # fmt: skip
        finally:
            watch.close()
            operator.stop()
    return latencies, extras


def report(latencies: list[float], extras: list[int], command: str) -> str:
    ordered = sorted(latencies)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    median = statistics.median(latencies)
    figures = (
        f"| {len(latencies)} | **{median:.3f} s** | {p90:.3f} s | {ordered[0]:.3f} s "
        f"| {ordered[-1]:.3f} s | {sum(extras)} |"
    )
    rows = "\n".join(f"| {i} | {s:.3f} |" for i, s in enumerate(latencies, 1))
    return f"""# Rollout latency: config change to new ReplicaSet

Command: `{command}` ({datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
{platform.machine()}, Python {platform.python_version()}, real kube-apiserver + etcd +
kube-controller-manager on loopback, real redis-server, operator as a subprocess).

Each sample changes a LockStore's `spec.redis.keyPrefix` with `kubectl patch` and measures from
the moment the API server accepted the patch to the moment a `kubectl get rs --watch` saw the
Deployment's new ReplicaSet. In between, the operator re-renders the ConfigMap, waits for the
namespace to be quiet for the settle window ({SETTLE} s, `TURNSTILE_ROLLOUT_SETTLE_SECONDS`),
patches the pod template's `turnstile.dev/config-checksum`, and the Deployment controller
creates the ReplicaSet.

| samples | median | p90 | min | max | extra ReplicaSets (all samples) |
| --- | --- | --- | --- | --- | --- |
{figures}

The settle window is most of the figure by design: it is what turns several stores changing
together into one rollout. After each sample the benchmark waited a further {SETTLE + 2.5} s and
counted ReplicaSets again: "extra" is how many more than one the change created.

| sample | seconds |
| --- | --- |
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    latencies, extras = run(args.samples)
    command = "python -m bench.rollout" + (
        f" --samples {args.samples}" if args.samples != 20 else ""
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(latencies, extras, command))
    print(f"median {statistics.median(latencies):.3f}s over {len(latencies)} samples "
          f"(extra ReplicaSets: {sum(extras)}); wrote {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
