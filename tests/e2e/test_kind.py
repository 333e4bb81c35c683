"""End-to-end: the operator image, installed by the chart, on a real cluster: any kubeconfig.

Two ways bring such a cluster up and run this module with ``TURNSTILE_E2E_KUBECONFIG`` set:

* ``make e2e-node`` (``tests/platform/e2e_node.py``): the node tier on this machine, with
  CoreDNS, no Docker needed;
* ``make e2e`` (``hack/e2e-kind.sh``): a kind cluster, on a host with Docker. Run directly
  (``pytest -m e2e tests/e2e``) without that variable on such a host, the module brings the kind
  cluster up itself and deletes it afterwards.

Each creates the cluster, builds and loads the operator image, installs the chart, starts Redis
in all three modes and the stand-in bot. Without the variable and without a Docker engine
(detected with ``docker info``) every test here skips with the reason.
The manifests this module applies are still checked on every ``make test``:
``tests/k8s/test_e2e_manifests.py`` validates them with ``kubectl apply --dry-run=server``
against the real API server of the ``k8s`` tier.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.platform.control_plane import wait_for as _wait_for

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "tests" / "e2e" / "manifests"
SCRIPT = ROOT / "hack" / "e2e-kind.sh"
CHECKSUM_ANNOTATION = "turnstile.dev/config-checksum"

# Explicit: tests/conftest.py marks tiers by folder only after `-m` has already filtered.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def docker_unavailable() -> str | None:
    """Why this host cannot run kind, or ``None`` if ``docker info`` reaches an engine."""
    if shutil.which("docker") is None:
        return "docker CLI not found on PATH"
    try:
        proc = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "docker info timed out after 30s"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return (
            f"no Docker engine: docker info exited {proc.returncode} ({lines[-1] if lines else ''})"
        )
    return None


@dataclass(frozen=True)
class Kind:
    """kubectl against the e2e cluster, in the namespace the operator watches."""

    kubeconfig: str
    namespace: str
    operator_namespace: str
    kubectl_bin: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc.stdout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("-n", self.namespace, "get", kind, name, "-o", "json"))


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[Kind]:
    """The e2e cluster: the one ``TURNSTILE_E2E_KUBECONFIG`` names (made by make e2e-node or
    hack/e2e-kind.sh), or a kind cluster brought up (and down) here."""
    kubeconfig = os.environ.get("TURNSTILE_E2E_KUBECONFIG")
    owned = kubeconfig is None
    reason = docker_unavailable() if owned else None
    if reason:
        pytest.skip(f"E2E SKIPPED -- {reason}; run `make e2e-node` here (the node tier), or "
                    "`make e2e` on a host with a Docker engine")
    if owned:
        if _script("up", timeout=1800).returncode != 0:
            pytest.fail("hack/e2e-kind.sh up failed (see its output above)", pytrace=False)
        kubeconfig = subprocess.run(
            ["bash", str(SCRIPT), "--print-kubeconfig"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    try:
        yield Kind(
            kubeconfig=str(kubeconfig),
            # Fixed: stores.yaml addresses Redis as <service>.turnstile-e2e.svc.
            namespace="turnstile-e2e",
            operator_namespace=os.environ.get(
                "TURNSTILE_E2E_OPERATOR_NAMESPACE", "turnstile-system"
            ),
            kubectl_bin=os.environ.get("TURNSTILE_E2E_KUBECTL")
            or shutil.which("kubectl")
            or "kubectl",
        )
    finally:
        if owned:
            _script("down", timeout=600)


@pytest.fixture(scope="module")
def stores(kind_cluster: Kind) -> Kind:
    """The stores of tests/e2e/manifests/stores.yaml, applied once for the module."""
    kind_cluster.kubectl(
        "-n", kind_cluster.namespace, "apply", "-f", str(MANIFESTS / "stores.yaml")
    )
    return kind_cluster


def wait_for(what: str, check: Any, timeout: float = 180.0, interval: float = 2.0) -> Any:
    return _wait_for(what, check, timeout, interval)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def test_operator_deployment_rolls_out_with_the_chart_defaults(kind_cluster: Kind) -> None:
    out = kind_cluster.kubectl(
        "-n",
        kind_cluster.operator_namespace,
        "rollout",
        "status",
        "deployment/turnstile-turnstile-operator",
        "--timeout=180s",
    )
    assert "successfully rolled out" in out


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("lockstore", "lock-standalone"),
        ("timerstore", "timers-standalone"),
        ("lockstore", "lock-cluster"),
        ("lockstore", "lock-sentinel"),
    ],
)
def test_store_becomes_ready_in_each_redis_mode(stores: Kind, kind: str, name: str) -> None:
    ready = wait_for(
        f"{kind}/{name} Ready=True",
        lambda: condition(stores.get(kind, name), "Ready").get("status") == "True" or None,
    )
    assert ready


@pytest.mark.parametrize(
    ("configmap", "expected"),
    [
        ("bot-endpoints", ["lock_store:", "turnstile.rasa.TicketLockStore", "timer_store:"]),
        ("cluster-endpoints", ["lock_store:", "deployment_mode: cluster"]),
        ("sentinel-endpoints", ["lock_store:", "deployment_mode: sentinel", "mymaster"]),
    ],
)
def test_configmap_holds_the_rendered_sections(
    stores: Kind, configmap: str, expected: list[str]
) -> None:
    def rendered() -> str | None:
        out = stores.kubectl(
            "-n", stores.namespace, "get", "configmap", configmap, "-o", "json", check=False
        )
        if not out:
            return None
        text = json.loads(out).get("data", {}).get("endpoints.yml", "")
        return text if all(e in text for e in expected) else None

    assert wait_for(f"configmap/{configmap} with {expected}", rendered)


def test_store_change_rolls_the_bot_deployment(stores: Kind) -> None:
    def checksum() -> str | None:
        bot = stores.get("deployment", "bot")
        return bot["spec"]["template"]["metadata"].get("annotations", {}).get(CHECKSUM_ANNOTATION)

    before = wait_for("the bot's first checksum", checksum)
    stores.kubectl(
        "-n",
        stores.namespace,
        "patch",
        "lockstore",
        "lock-standalone",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lockLifetime": 90}}),
    )
    after = wait_for("a new checksum on the bot", lambda: (c := checksum()) != before and c)
    assert after != before
    out = stores.kubectl(
        "-n", stores.namespace, "rollout", "status", "deployment/bot", "--timeout=180s"
    )
    assert "successfully rolled out" in out
    text = json.loads(
        stores.kubectl("-n", stores.namespace, "get", "configmap", "bot-endpoints", "-o", "json")
    )["data"]["endpoints.yml"]
    assert "lock_lifetime: 90" in text
