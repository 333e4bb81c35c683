"""The chart on the real API server: it installs, its RBAC is enough, and it is not more.

``helm install`` runs as admin against the ``k8s`` tier's control plane (the operator image never
starts: there is no kubelet). Everything after that authenticates as the chart's ServiceAccount,
with a bound token from the TokenRequest API, so the API server's RBAC authorizer decides:

* the operator *process* (``OperatorProcess``: ``python -m turnstile.operator`` from this
  checkout, with ``--peering``) runs locally with that identity and completes a full reconcile:
  a LockStore against a real Redis becomes Ready, its section lands in the ConfigMap, the
  Deployment it targets gets the checksum annotation (and a new one when the store changes),
  and deleting the store runs its cleanup; the operator log holds no authorization failure.
  In cluster-wide mode too, which also shows that mode needs no access to namespaces;
* what it may do, and (more to the point) what it may not: Secrets of a namespace it does not
  watch, anything in that namespace, ClusterRoles, RoleBindings, Pods, deleting workloads.

Namespaced and cluster-wide mode each get their own release.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.platform.control_plane import REPO_ROOT, ControlPlane
from tests.platform.operator_process import OperatorProcess
from tests.platform.redis_servers import RedisServer

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

CHART = REPO_ROOT / "charts" / "turnstile-operator"
CHECKSUM_ANNOTATION = "turnstile.dev/config-checksum"


# ---------------------------------------------------------------------- releases


@dataclass
class Release:
    """One installed release and the namespaces around it."""

    cp: ControlPlane
    name: str
    namespace: str
    watched: list[str]
    unwatched: str
    cluster_wide: bool
    kubeconfig: Path = field(default=Path())

    @property
    def fullname(self) -> str:
        return f"{self.name}-turnstile-operator"

    def as_operator(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """kubectl with the chart's ServiceAccount identity."""
        return self.cp.kubectl(*args, kubeconfig=self.kubeconfig, check=check)

    def can_i(self, verb: str, resource: str, *scope: str, subresource: str = "") -> bool:
        args = ["auth", "can-i", verb, resource, *scope]
        if subresource:
            args.append(f"--subresource={subresource}")
        proc = self.as_operator(*args)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {proc.stderr}"
        return answer == "yes"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _helm(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cp.binary("helm")), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=cp.env(),
        check=False,
    )


@contextlib.contextmanager
def installed(cp: ControlPlane, *, cluster_wide: bool) -> Iterator[Release]:
    tag = "cw" if cluster_wide else "ns"
    release = Release(
        cp=cp,
        name=_unique(f"rbac{tag}"),
        namespace=_unique(f"ts-{tag}-op"),
        watched=[_unique(f"ts-{tag}-a"), _unique(f"ts-{tag}-b")],
        unwatched=_unique(f"ts-{tag}-x"),
        cluster_wide=cluster_wide,
    )
    namespaces = [release.namespace, *release.watched, release.unwatched]
    for ns in namespaces:
        cp.kubectl("create", "namespace", ns)
    values = ["--set", "clusterWide=true"] if cluster_wide else [
        "--set", "watchNamespaces={" + ",".join(release.watched) + "}",
    ]  # fmt: skip
    try:
        proc = _helm(
            cp, "install", release.name, str(CHART), "--namespace", release.namespace,
            "--set", "metrics.enabled=false", *values,
        )  # fmt: skip
        assert proc.returncode == 0, f"helm install failed:\n{proc.stdout}\n{proc.stderr}"
        release.kubeconfig = cp.service_account_kubeconfig(
            release.namespace, release.fullname, create=False
        )
        yield release
    finally:
        _helm(cp, "uninstall", release.name, "--namespace", release.namespace, "--wait=false")
        for ns in namespaces:
            cp.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def namespaced(control_plane: ControlPlane) -> Iterator[Release]:
    with installed(control_plane, cluster_wide=False) as release:
        yield release


@pytest.fixture(scope="module")
def cluster_wide(control_plane: ControlPlane) -> Iterator[Release]:
    with installed(control_plane, cluster_wide=True) as release:
        yield release


# ------------------------------------------------------------------- installation


def test_helm_install_creates_the_operator_and_its_identity(namespaced: Release) -> None:
    cp = namespaced.cp
    status = json.loads(
        _helm(cp, "status", namespaced.name, "-n", namespaced.namespace, "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"
    deployment = json.loads(
        cp.kubectl(
            "-n", namespaced.namespace, "get", "deployment", namespaced.fullname, "-o", "json"
        ).stdout
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == namespaced.fullname
    # The API server accepted the hardened pod spec as rendered (defaults filled in, nothing lost).
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for ns in namespaced.watched:
        cp.kubectl("-n", ns, "get", "kopfpeering", namespaced.fullname)
        cp.kubectl("-n", ns, "get", "role", namespaced.fullname)
    assert cp.kubectl("get", "crd", "lockstores.turnstile.dev", "timerstores.turnstile.dev")
    whoami = namespaced.as_operator("auth", "whoami", "-o", "json", check=True)
    username = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{namespaced.namespace}:{namespaced.fullname}"


# ---------------------------------------------------------------- namespaced RBAC

#: (verb, resource, subresource) the operator needs in every namespace it watches.
NEEDED_IN_WATCHED = [
    ("list", "lockstores.turnstile.dev", ""),
    ("watch", "timerstores.turnstile.dev", ""),
    ("patch", "lockstores.turnstile.dev", ""),
    ("patch", "lockstores.turnstile.dev", "status"),
    ("patch", "timerstores.turnstile.dev", "status"),
    ("get", "configmaps", ""),
    ("watch", "configmaps", ""),
    ("create", "configmaps", ""),
    ("update", "configmaps", ""),
    ("get", "secrets", ""),
    ("watch", "secrets", ""),
    ("patch", "deployments.apps", ""),
    ("patch", "statefulsets.apps", ""),
    ("create", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("patch", "kopfpeerings.kopf.dev", ""),
]

#: What the operator must never be able to do in a namespace it watches.
REFUSED_IN_WATCHED = [
    ("delete", "configmaps"),
    ("patch", "configmaps"),
    ("create", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("delete", "deployments.apps"),
    ("create", "deployments.apps"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("delete", "lockstores.turnstile.dev"),
    ("create", "lockstores.turnstile.dev"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
]


@pytest.mark.parametrize(("verb", "resource", "sub"), NEEDED_IN_WATCHED)
def test_operator_may_do_its_job_in_each_watched_namespace(
    namespaced: Release, verb: str, resource: str, sub: str
) -> None:
    for ns in namespaced.watched:
        assert namespaced.can_i(verb, resource, "-n", ns, subresource=sub), (verb, resource, ns)


#: What reportUnwatchedStores (default on) grants at cluster scope: a list of the stores and a
#: patch of their status, to mark the ones in namespaces nobody watches. Nothing else.
REPORTING_UNWATCHED = [
    ("list", "lockstores.turnstile.dev", ""),
    ("patch", "lockstores.turnstile.dev", "status"),
    ("patch", "timerstores.turnstile.dev", "status"),
]


@pytest.mark.parametrize(("verb", "resource", "sub"), NEEDED_IN_WATCHED)
def test_operator_may_do_nothing_in_a_namespace_it_does_not_watch(
    namespaced: Release, verb: str, resource: str, sub: str
) -> None:
    allowed = namespaced.can_i(verb, resource, "-n", namespaced.unwatched, subresource=sub)
    assert allowed is ((verb, resource, sub) in REPORTING_UNWATCHED)


@pytest.mark.parametrize(("verb", "resource"), REFUSED_IN_WATCHED)
def test_operator_may_not_exceed_its_job_in_watched_namespaces(
    namespaced: Release, verb: str, resource: str
) -> None:
    assert not namespaced.can_i(verb, resource, "-n", namespaced.watched[0])


def test_reading_secrets_of_an_unwatched_namespace_is_forbidden(namespaced: Release) -> None:
    cp = namespaced.cp
    cp.kubectl(
        "-n", namespaced.unwatched, "create", "secret", "generic", "not-yours",
        "--from-literal=password=hunter2",
    )  # fmt: skip
    for args in (
        ("-n", namespaced.unwatched, "get", "secret", "not-yours"),
        ("-n", namespaced.unwatched, "get", "secrets"),
        ("get", "secrets", "--all-namespaces"),
        # Its own namespace is not watched either: nothing to read there.
        ("-n", namespaced.namespace, "get", "secrets"),
    ):
        proc = namespaced.as_operator(*args)
        assert proc.returncode != 0, args
        assert "forbidden" in proc.stderr.lower(), proc.stderr
        assert "hunter2" not in proc.stdout


def test_namespaced_operator_has_only_crd_discovery_at_cluster_scope(namespaced: Release) -> None:
    assert namespaced.can_i("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert namespaced.can_i("watch", "customresourcedefinitions.apiextensions.k8s.io")
    # Names only, so kopf can follow the watched namespaces (rbac.namespaceDiscovery).
    assert namespaced.can_i("list", "namespaces")
    assert namespaced.can_i("watch", "namespaces")
    for verb, resource in [
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "namespaces"),
        ("delete", "namespaces"),
        ("patch", "namespaces"),
        ("list", "nodes"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("impersonate", "serviceaccounts"),
        ("create", "certificatesigningrequests.certificates.k8s.io"),
    ]:
        assert not namespaced.can_i(verb, resource), (verb, resource)
    # reportUnwatchedStores: a list of the stores everywhere, never a watch, get or patch.
    assert namespaced.can_i("list", "lockstores.turnstile.dev", "--all-namespaces")
    for verb in ("watch", "get", "patch", "update", "delete"):
        assert not namespaced.can_i(verb, "lockstores.turnstile.dev", "--all-namespaces"), verb
    assert not namespaced.can_i("list", "secrets", "--all-namespaces")


def test_creating_a_cluster_role_is_forbidden(namespaced: Release) -> None:
    proc = namespaced.as_operator(
        "create", "clusterrole", _unique("escalate"), "--verb=*", "--resource=*"
    )
    assert proc.returncode != 0
    assert "forbidden" in proc.stderr.lower(), proc.stderr


def test_binding_itself_to_more_power_is_forbidden(namespaced: Release) -> None:
    proc = namespaced.as_operator(
        "-n", namespaced.watched[0], "create", "rolebinding", _unique("escalate"),
        "--clusterrole=admin",
        f"--serviceaccount={namespaced.namespace}:{namespaced.fullname}",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "forbidden" in proc.stderr.lower(), proc.stderr


# -------------------------------------------------------------- cluster-wide RBAC


def test_cluster_wide_operator_may_watch_stores_everywhere(cluster_wide: Release) -> None:
    for verb, resource in [
        ("list", "lockstores.turnstile.dev"),
        ("watch", "timerstores.turnstile.dev"),
        ("watch", "secrets"),
        ("watch", "deployments.apps"),
        ("list", "configmaps"),
    ]:
        assert cluster_wide.can_i(verb, resource, "--all-namespaces"), (verb, resource)
    assert cluster_wide.can_i("patch", "clusterkopfpeerings.kopf.dev")
    assert cluster_wide.can_i("patch", "lockstores.turnstile.dev", "-n", cluster_wide.unwatched,
                              subresource="status")  # fmt: skip
    cluster_wide.cp.kubectl("get", "clusterkopfpeering", cluster_wide.fullname)


def test_cluster_wide_operator_is_still_least_privilege(cluster_wide: Release) -> None:
    for verb, resource in [
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "pods"),
        ("delete", "secrets"),
        ("update", "secrets"),
        ("delete", "deployments.apps"),
        ("patch", "kopfpeerings.kopf.dev"),
        ("list", "nodes"),
        ("impersonate", "users"),
    ]:
        assert not cluster_wide.can_i(verb, resource, "--all-namespaces"), (verb, resource)
    proc = cluster_wide.as_operator("create", "clusterrole", _unique("x"), "--verb=get",
                                    "--resource=pods")  # fmt: skip
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stderr


# ------------------------------------------------- the operator, as that identity


def wait_for(
    what: str, check: Callable[[], Any], op: OperatorProcess, timeout: float = 60.0
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        if not op.running:
            break
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{op.tail(60)}")


def authorization_failures(op: OperatorProcess) -> list[str]:
    """Log lines of the operator that say a request was refused by RBAC."""
    return [
        line
        for line in op.logs().splitlines()
        if " 403" in line or "forbidden" in line.lower() or "Not enough permissions" in line
    ]


BOT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "bot", "labels": {"app": "bot"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "bot"}},
        "template": {
            "metadata": {"labels": {"app": "bot"}},
            "spec": {"containers": [{"name": "bot", "image": "registry.k8s.io/pause:3.10"}]},
        },
    },
}


def _lock_store(redis: RedisServer) -> dict[str, Any]:
    return {
        "apiVersion": "turnstile.dev/v1alpha1",
        "kind": "LockStore",
        "metadata": {"name": "locks"},
        "spec": {
            "redis": {"deploymentMode": "standard", "host": redis.host, "port": redis.port,
                      "keyPrefix": "rbac"},
            "lockLifetime": 60,
            "configMap": {"name": "bot-endpoints"},
            "rollout": {"workloads": [{"kind": "Deployment", "name": "bot"}]},
        },
    }  # fmt: skip


def _ready(cp: ControlPlane, ns: str, name: str) -> Callable[[], bool]:
    def check() -> bool:
        store = json.loads(cp.kubectl("-n", ns, "get", "lockstore", name, "-o", "json").stdout)
        conditions = {c["type"]: c for c in store.get("status", {}).get("conditions", [])}
        return conditions.get("Ready", {}).get("status") == "True"

    return check


def test_operator_reconciles_and_rolls_out_with_only_the_charts_rbac(
    namespaced: Release, redis_server: RedisServer
) -> None:
    cp = namespaced.cp
    ns = namespaced.watched[0]
    cp.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps(BOT))
    op = OperatorProcess(
        namespaced.kubeconfig,
        namespaces=namespaced.watched,
        standalone=False,
        extra_args=["--peering", namespaced.fullname, "--verbose"],
        name="operator-rbac-ns",
    )
    with op:
        cp.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps(_lock_store(redis_server)))
        wait_for("LockStore Ready=True", _ready(cp, ns, "locks"), op)

        def section() -> dict[str, Any] | None:
            got = cp.kubectl("-n", ns, "get", "configmap", "bot-endpoints", "-o", "json",
                             check=False)  # fmt: skip
            if got.returncode != 0:
                return None
            text = json.loads(got.stdout).get("data", {}).get("endpoints.yml", "")
            return (yaml.safe_load(text) or {}).get("lock_store")

        lock_store = wait_for("the lock_store section in ConfigMap bot-endpoints", section, op)
        assert lock_store["type"] == "turnstile.rasa.TicketLockStore"
        assert str(lock_store["port"]) == str(redis_server.port)

        def checksum() -> str | None:
            bot = json.loads(cp.kubectl("-n", ns, "get", "deployment", "bot", "-o", "json").stdout)
            annotations = bot["spec"]["template"]["metadata"].get("annotations") or {}
            return annotations.get(CHECKSUM_ANNOTATION)

        first = wait_for("the checksum annotation on Deployment bot", checksum, op)
        cp.kubectl(
            "-n", ns, "patch", "lockstore", "locks", "--type=merge",
            "-p", json.dumps({"spec": {"lockLifetime": 90}}),
        )  # fmt: skip
        wait_for("a new checksum after the store changed", lambda: checksum() not in (None, first),
                 op)  # fmt: skip
        peering = json.loads(
            cp.kubectl("-n", ns, "get", "kopfpeering", namespaced.fullname, "-o", "json").stdout
        )
        assert peering.get("status"), "the operator never announced itself in the KopfPeering"
        # Deleting the store runs the cleanup handler (ConfigMap update, finalizer removal).
        cp.kubectl("-n", ns, "delete", "lockstore", "locks", "--timeout=60s")
    failures = authorization_failures(op)
    assert not failures, "RBAC refusals in the operator log:\n" + "\n".join(failures)


def test_cluster_wide_operator_reconciles_with_only_the_charts_rbac(
    cluster_wide: Release, redis_server: RedisServer
) -> None:
    cp = cluster_wide.cp
    # Any namespace will do: cluster-wide mode watches them all.
    ns = cluster_wide.unwatched
    op = OperatorProcess(
        cluster_wide.kubeconfig,
        namespaces=(),  # --all-namespaces
        standalone=False,
        extra_args=["--peering", cluster_wide.fullname, "--verbose"],
        name="operator-rbac-cw",
    )
    with op:
        cp.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps(BOT))
        cp.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps(_lock_store(redis_server)))
        wait_for("LockStore Ready=True", _ready(cp, ns, "locks"), op)
        peering = json.loads(
            cp.kubectl("get", "clusterkopfpeering", cluster_wide.fullname, "-o", "json").stdout
        )
        assert peering.get("status"), "the operator never announced itself"
        cp.kubectl("-n", ns, "delete", "lockstore", "locks", "--timeout=60s")
    failures = authorization_failures(op)
    assert not failures, "RBAC refusals in the operator log:\n" + "\n".join(failures)


# ------------------------------------------------------- every variant, server-side

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.fixture(scope="module")
def chart_crds(control_plane: ControlPlane) -> None:
    """The chart's CRDs (Turnstile's and kopf's peering), as `helm install` would add them."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev",
        "crd/lockstores.turnstile.dev", "crd/timerstores.turnstile.dev",
    )  # fmt: skip


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_ci_variant_is_accepted_by_the_api_server(
    control_plane: ControlPlane, chart_crds: None, values: Path
) -> None:
    release_ns = _unique("ts-ci")
    proc = _helm(
        control_plane, "template", "ci", str(CHART), "--namespace", release_ns,
        "-f", str(values),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
    # The Prometheus Operator's CRDs are not part of this cluster; the ServiceMonitor's shape
    # is covered by test_chart.py.
    objects = [o for o in objects if o["kind"] != "ServiceMonitor"]
    namespaces = {release_ns} | {o["metadata"].get("namespace") for o in objects} - {None}
    created = []
    for ns in sorted(namespaces):
        if control_plane.kubectl("get", "namespace", ns, check=False).returncode != 0:
            control_plane.kubectl("create", "namespace", ns)
            created.append(ns)
    try:
        applied = control_plane.kubectl(
            "apply", "--dry-run=server", "-f", "-",
            stdin=yaml.safe_dump_all(objects), check=False,
        )  # fmt: skip
        assert applied.returncode == 0, f"{values.name} rejected:\n{applied.stderr}"
        assert applied.stdout.count("(server dry run)") == len(objects), applied.stdout
    finally:
        for ns in created:
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
