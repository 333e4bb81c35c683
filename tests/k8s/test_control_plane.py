"""Smoke tests for the test control plane itself.

The operator tests rely on the API server and controller-manager behaving like
a real cluster. These tests pin down exactly the behaviours we depend on, so a
broken build or a bad flag shows up here with a clear message instead of as a
mysterious operator-test failure: CRDs are served, RBAC is enforced for
ServiceAccount tokens, controllers reconcile, and garbage collection honours
ownerReferences.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.platform.control_plane import ControlPlane
from tests.platform.control_plane import wait_for as _wait_for

pytestmark = pytest.mark.k8s

#: Upper bound for anything a controller has to do; generous for 2-core CI.
CONTROLLER_TIMEOUT = 90.0


def wait_for(what: str, probe: Callable[[], Any], timeout: float = CONTROLLER_TIMEOUT) -> Any:
    return _wait_for(what, probe, timeout)

_T = TypeVar("_T")






def test_server_is_versioned_and_ready(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1."), version
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


@pytest.fixture
def widget_crd(control_plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """A tiny namespaced CRD under a unique group; yields (plural.group, group)."""
    group = f"smoke-{uuid.uuid4().hex[:8]}.turnstile.dev"
    name = f"widgets.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(crd))
    try:
        control_plane.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s", timeout=45
        )
        yield name, group
    finally:
        control_plane.kubectl(
            "delete", "crd", name, "--wait=false", "--ignore-not-found", check=False
        )


def test_crd_is_served_and_validated(
    control_plane: ControlPlane, kube_namespace: str, widget_crd: tuple[str, str]
) -> None:
    resource, group = widget_crd
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": kube_namespace},
        "spec": {"size": 3},
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(widget))
    got = control_plane.get_json("-n", kube_namespace, resource, "w1")
    assert got is not None and got["spec"] == {"size": 3}

    # The structural schema is enforced by the API server, not by kubectl.
    bad = {**widget, "metadata": {"name": "w2", "namespace": kube_namespace}, "spec": {"size": 0}}
    proc = control_plane.kubectl("create", "-f", "-", stdin=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "spec.size" in proc.stderr, proc.stderr


def test_rbac_denies_then_allows_service_account(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    sa_config = control_plane.service_account_kubeconfig(ns, "reader")
    control_plane.kubectl("-n", ns, "create", "configmap", "target", "--from-literal=k=v")

    can_i = control_plane.kubectl(
        "auth", "can-i", "get", "configmaps", "-n", ns, kubeconfig=sa_config, check=False
    )
    assert can_i.stdout.strip() == "no", can_i
    denied = control_plane.kubectl(
        "-n", ns, "get", "configmap", "target", kubeconfig=sa_config, check=False
    )
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr or "forbidden" in denied.stderr, denied.stderr
    assert f"system:serviceaccount:{ns}:reader" in denied.stderr, denied.stderr

    control_plane.kubectl(
        "-n", ns, "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps"
    )
    control_plane.kubectl(
        "-n",
        ns,
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={ns}:reader",
    )

    # The RBAC authorizer reads bindings from an informer: allow a short lag.
    def allowed() -> bool:
        proc = control_plane.kubectl(
            "-n", ns, "get", "configmap", "target", kubeconfig=sa_config, check=False
        )
        return proc.returncode == 0

    wait_for("the RoleBinding to take effect", allowed, timeout=30)
    can_i = control_plane.kubectl(
        "auth", "can-i", "get", "configmaps", "-n", ns, kubeconfig=sa_config, check=False
    )
    assert can_i.stdout.strip() == "yes", can_i
    # ...and nothing beyond what the Role grants.
    can_i = control_plane.kubectl(
        "auth", "can-i", "delete", "configmaps", "-n", ns, kubeconfig=sa_config, check=False
    )
    assert can_i.stdout.strip() == "no", can_i


def test_deployment_gets_replicaset_and_pods(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    # No kubelet or scheduler: the image is never pulled and Pods stay Pending.
    control_plane.kubectl(
        "-n", ns, "create", "deployment", "web", "--image=registry.invalid/pause:1", "--replicas=2"
    )

    def replicaset() -> dict[str, Any] | None:
        items = (control_plane.get_json("-n", ns, "replicasets", "-l", "app=web") or {}).get(
            "items", []
        )
        return items[0] if items else None

    rs = wait_for("the Deployment controller to create a ReplicaSet", replicaset)
    owners = rs["metadata"].get("ownerReferences", [])
    assert [(o["kind"], o["name"], o.get("controller")) for o in owners] == [
        ("Deployment", "web", True)
    ]

    # The ReplicaSet controller creates the Pods (needs the `default` SA, made
    # by the ServiceAccount controller): proves the whole controller chain.
    def pods_created() -> bool:
        current = replicaset() or {}
        return bool(current.get("status", {}).get("replicas", 0) == 2)

    wait_for("the ReplicaSet controller to create 2 Pods", pods_created)


def _create_owned_configmap(cp: ControlPlane, ns: str, name: str, owner: dict[str, Any]) -> None:
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "data": {"k": "v"},
    }
    cp.kubectl("create", "-f", "-", stdin=json.dumps(dependent))


def test_garbage_collector_deletes_dependent_of_deleted_owner(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    control_plane.kubectl("-n", ns, "create", "configmap", "owner", "--from-literal=k=v")
    owner = control_plane.get_json("-n", ns, "configmap", "owner")
    assert owner is not None
    # Delete the owner first, so the dependent is born with a dangling
    # ownerReference: only the garbage collector can notice and remove it.
    control_plane.kubectl("-n", ns, "delete", "configmap", "owner", "--wait=true", timeout=60)
    _create_owned_configmap(control_plane, ns, "orphan", owner)

    wait_for(
        "the garbage collector to delete a ConfigMap whose owner is gone",
        lambda: control_plane.get_json("-n", ns, "configmap", "orphan") is None,
    )


def test_garbage_collector_cascades_background_delete(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    control_plane.kubectl("-n", ns, "create", "configmap", "parent", "--from-literal=k=v")
    parent = control_plane.get_json("-n", ns, "configmap", "parent")
    assert parent is not None
    _create_owned_configmap(control_plane, ns, "child", parent)
    control_plane.kubectl("-n", ns, "create", "configmap", "bystander")
    control_plane.kubectl("-n", ns, "delete", "configmap", "parent", "--cascade=background")

    wait_for(
        "the garbage collector to cascade-delete the child ConfigMap",
        lambda: control_plane.get_json("-n", ns, "configmap", "child") is None,
    )
    # A ConfigMap without owners is left alone.
    assert control_plane.get_json("-n", ns, "configmap", "bystander") is not None
