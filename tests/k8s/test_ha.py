"""HA: with peering and more than one replica exactly one is active; killing it hands over.

Two and three operator processes with ``--peering`` (no ``--standalone``) watch one
namespace, as the chart's ``replicaCount`` > 1 with ``peering.enabled`` runs them. Each takes
a random kopf priority, so one is active and the rest pause; the active one is killed with
``-9`` (no goodbye in the peering record) and a store created afterwards must become Ready
within the peering lifetime plus a re-check.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.k8s.test_operator import Cluster, crds, store  # noqa: F401 (fixture)
from tests.platform.control_plane import ControlPlane
from tests.platform.operator_process import OperatorProcess
from tests.platform.redis_servers import RedisServer
from turnstile.operator.handlers.stores import PEERING_LIFETIME

pytestmark = pytest.mark.k8s

PEERING_CRDS = (
    Path(__file__).resolve().parents[2]
    / "charts" / "turnstile-operator" / "crds" / "kopf.dev_peerings.yaml"
)  # fmt: skip
#: A killed active replica's record runs out within PEERING_LIFETIME; then the next re-check.
TAKEOVER_BOUND = PEERING_LIFETIME + 15


def _working(ops: list[OperatorProcess], window: float = 6.0) -> list[OperatorProcess]:
    """The replicas that re-checked a store in the last ``window`` seconds (interval 2 s)."""
    marks = [len(op.logs()) for op in ops]
    time.sleep(window)
    pairs = zip(ops, marks, strict=True)
    return [op for op, mark in pairs if "Timer 'recheck'" in op.logs()[mark:]]


def _active(ops: list[OperatorProcess]) -> OperatorProcess:
    """The one replica doing the work, once the pauses have settled (bounded)."""
    working: list[OperatorProcess] = []
    for _ in range(10):
        working = _working([op for op in ops if op.running])
        if len(working) == 1:
            return working[0]
    raise AssertionError(f"{len(working)} replicas working, not 1:\n"
                         + "\n".join(op.tail() for op in ops))


@pytest.mark.parametrize("replicas", [2, 3])
def test_one_replica_is_active_and_another_takes_over_when_it_is_killed(
    crds: ControlPlane,  # noqa: F811
    kube_namespace: str,
    redis_server: RedisServer,
    replicas: int,
) -> None:
    k = Cluster(crds, kube_namespace)
    crds.kubectl("apply", "-f", str(PEERING_CRDS))
    k.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
             "metadata": {"name": "turnstile"}})  # fmt: skip
    redis = {"host": redis_server.host, "port": redis_server.port}
    ops = [
        OperatorProcess(crds.kubeconfig, namespaces=[kube_namespace], standalone=False,
                        extra_args=["--peering", "turnstile"], name=f"ha-{i}")
        for i in range(replicas)
    ]  # fmt: skip
    try:
        for op in ops:
            op.start()
        k.apply(store("LockStore", "before", redis, configMap={"name": "before"}))
        k.wait_condition("LockStore", "before", "True", "Ready")
        active = _active(ops)
        assert not any("Pausing all operators" in op.logs() for op in ops)

        active.kill()
        killed = time.monotonic()
        k.apply(store("LockStore", "after", redis, configMap={"name": "after"}))
        k.wait_condition("LockStore", "after", "True", "Ready", timeout=TAKEOVER_BOUND + 30)
        took = time.monotonic() - killed
        print(f"\n{replicas} replicas: a store created after the active one was killed -9 "
              f"was Ready {took:.1f} s after the kill")
        assert took < TAKEOVER_BOUND, f"takeover took {took:.1f} s"
        assert sum(op.running for op in ops) == replicas - 1
        assert _active(ops) is not active
    finally:
        for op in ops:
            op.stop()
