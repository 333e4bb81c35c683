"""The kind e2e run's inputs, checked on every ``make test`` (no Docker needed).

``tests/e2e`` only runs where Docker is; a typo in its manifests would otherwise surface on the
first machine that has it. So every manifest under ``tests/e2e/manifests`` goes through
``kubectl apply --dry-run=server`` against the real API server of the ``k8s`` tier (schema,
defaulting, the stores' CRD validations, admission), and ``hack/kind/cluster.yaml`` is checked
field by field against kind's ``v1alpha4`` Cluster type (the field list below is kind v0.33.0's;
when that kind's source is in the Go module cache, the list is checked against it too).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.platform.control_plane import REPO_ROOT, ControlPlane

pytestmark = pytest.mark.k8s

MANIFESTS = REPO_ROOT / "tests" / "e2e" / "manifests"
KIND_CONFIG = REPO_ROOT / "hack" / "kind" / "cluster.yaml"
CRDS = sorted((REPO_ROOT / "crds").glob("*.yaml"))
KIND_VERSION = "v0.33.0"

#: kind.x-k8s.io/v1alpha4 field names by type (sigs.k8s.io/kind pkg/apis/config/v1alpha4).
KIND_FIELDS: dict[str, set[str]] = {
    "Cluster": {
        "kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
        "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
        "containerdConfigPatchesJSON6902",
    },
    "Node": {
        "role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches",
        "kubeadmConfigPatchesJSON6902",
    },
    "Networking": {
        "ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet",
        "disableDefaultCNI", "kubeProxyMode", "dnsSearch",
    },
    "Mount": {"containerPath", "hostPath", "readOnly", "selinuxRelabel", "propagation"},
    "PortMapping": {"containerPort", "hostPort", "listenAddress", "protocol"},
}  # fmt: skip


def _manifests() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


@pytest.fixture(scope="module")
def e2e_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """The namespace the e2e script uses, with the stores' CRDs installed."""
    name = "turnstile-e2e"
    if control_plane.kubectl("get", "namespace", name, check=False).returncode != 0:
        control_plane.kubectl("create", "namespace", name)
    for crd in CRDS:
        control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for crd in CRDS:
        crd_name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        control_plane.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=60s"
        )
    yield name


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda p: p.name)
def test_e2e_manifest_is_accepted_by_the_api_server(
    control_plane: ControlPlane, e2e_namespace: str, manifest: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    if any(d["apiVersion"].startswith("turnstile.dev/") for d in docs) and not CRDS:
        pytest.skip("crds/ holds no CRDs yet")
    for doc in docs:
        # The script applies with -n; a hard-coded namespace would escape the e2e namespace.
        assert "namespace" not in doc["metadata"], f"{manifest.name}: {doc['metadata']}"
    proc = control_plane.kubectl(
        "-n", e2e_namespace, "apply", "--dry-run=server", "-f", str(manifest), check=False
    )
    assert proc.returncode == 0, f"{manifest.name} rejected:\n{proc.stderr}"
    assert proc.stdout.count("(server dry run)") == len(docs), proc.stdout


def test_e2e_images_are_pinned() -> None:
    for manifest in _manifests():
        for image in re.findall(r"^\s*image:\s*(\S+)", manifest.read_text(), re.MULTILINE):
            assert ":" in image.rsplit("/", 1)[-1], f"{manifest.name}: {image} has no tag"
            assert not image.endswith(":latest"), f"{manifest.name}: {image}"


def test_redis_cluster_job_forms_six_nodes_with_one_replica_each() -> None:
    docs = list(yaml.safe_load_all((MANIFESTS / "redis-cluster.yaml").read_text()))
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert sts["spec"]["replicas"] == 6
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "redis-cli --cluster create" in script
    assert "--cluster-replicas 1" in script
    assert "for i in 0 1 2 3 4 5" in script


def test_sentinel_group_has_a_quorum_of_three_sentinels() -> None:
    docs = list(yaml.safe_load_all((MANIFESTS / "redis-sentinel.yaml").read_text()))
    (sentinels,) = [d for d in docs if d["kind"] == "Deployment"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert sentinels["spec"]["replicas"] == 3
    conf = config["data"]["sentinel.conf"]
    assert re.search(r"^sentinel monitor mymaster \S+ 6379 2$", conf, re.MULTILINE)
    # A host-name monitor line is refused unless hostname resolution is switched on first.
    assert conf.index("resolve-hostnames yes") < conf.index("sentinel monitor")


def test_store_hosts_resolve_from_the_operators_namespace() -> None:
    # The operator runs in its own namespace: a bare Service name would resolve there, not here.
    docs = list(yaml.safe_load_all((MANIFESTS / "stores.yaml").read_text()))
    for doc in docs:
        redis = doc["spec"]["redis"]
        hosts = [redis["host"]] if "host" in redis else []
        hosts += [e.rsplit(":", 1)[0] for e in redis.get("endpoints", [])]
        for host in hosts:
            assert host.endswith(".turnstile-e2e.svc"), f"{doc['metadata']['name']}: {host}"
    script = (REPO_ROOT / "hack" / "e2e-kind.sh").read_text()
    assert 'E2E_NAMESPACE="turnstile-e2e"' in script


def test_e2e_script_refuses_clearly_without_docker() -> None:
    from tests.e2e.test_kind import docker_unavailable  # noqa: PLC0415

    if docker_unavailable() is None:
        pytest.skip("a Docker engine is available; make e2e runs the real thing")
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "e2e-kind.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "no Docker engine reachable" in proc.stderr


def test_stores_cover_every_redis_mode_and_target_the_bot() -> None:
    docs = list(yaml.safe_load_all((MANIFESTS / "stores.yaml").read_text()))
    modes = {d["spec"]["redis"]["deploymentMode"] for d in docs if d["kind"] == "LockStore"}
    assert modes == {"standard", "cluster", "sentinel"}
    bot = yaml.safe_load((MANIFESTS / "bot.yaml").read_text())
    volumes = bot["spec"]["template"]["spec"]["volumes"]
    mounted = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    rolling = [d for d in docs if d["spec"].get("rollout")]
    assert rolling
    for store in rolling:
        assert {"kind": "Deployment", "name": bot["metadata"]["name"]} in store["spec"]["rollout"][
            "workloads"
        ]
        assert store["spec"]["configMap"]["name"] in mounted


# ---------------------------------------------------------------------------- kind config


def _check_fields(node: Any, type_name: str, where: str) -> list[str]:
    if not isinstance(node, dict):
        return [f"{where}: expected a mapping for {type_name}, got {node!r}"]
    errors = [
        f"{where}.{key}: not a field of kind v1alpha4 {type_name}"
        for key in node
        if key not in KIND_FIELDS[type_name]
    ]
    return errors


def test_kind_config_uses_only_v1alpha4_cluster_fields() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    errors = _check_fields(config, "Cluster", "cluster")
    assert config.get("nodes"), "at least one node"
    for i, node in enumerate(config.get("nodes", [])):
        errors += _check_fields(node, "Node", f"nodes[{i}]")
        assert node.get("role") in ("control-plane", "worker"), node
        for j, mount in enumerate(node.get("extraMounts", [])):
            errors += _check_fields(mount, "Mount", f"nodes[{i}].extraMounts[{j}]")
        for j, mapping in enumerate(node.get("extraPortMappings", [])):
            errors += _check_fields(mapping, "PortMapping", f"nodes[{i}].extraPortMappings[{j}]")
        for key, value in (node.get("labels") or {}).items():
            assert isinstance(key, str) and isinstance(value, str), (key, value)
    if "networking" in config:
        errors += _check_fields(config["networking"], "Networking", "networking")
        assert config["networking"].get("ipFamily", "ipv4") in ("ipv4", "ipv6", "dual")
    assert not errors, "\n".join(errors)
    assert sum(n["role"] == "control-plane" for n in config["nodes"]) == 1


def test_kind_config_pins_the_node_image_by_digest() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    for node in config["nodes"]:
        assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"])


def _kind_source() -> Path:
    """kind's own source at the pinned version, from the Go module proxy (cached by Go)."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND_VERSION}"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    assert proc.returncode == 0, f"go mod download kind {KIND_VERSION}: {proc.stderr[-2000:]}"
    return Path(json.loads(proc.stdout)["Dir"])


def test_kind_field_list_matches_kinds_own_types() -> None:
    src = _kind_source()
    types = (src / "pkg/apis/config/v1alpha4/types.go").read_text()
    tags = set(re.findall(r'json:"([A-Za-z0-9]+)[,"]', types))
    listed = set().union(*KIND_FIELDS.values())
    assert listed <= tags, f"fields kind {KIND_VERSION} does not have: {sorted(listed - tags)}"
    image = (src / "pkg/apis/config/defaults/image.go").read_text()
    default = re.search(r'const Image = "([^"]+)"', image)
    assert default is not None
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert {n["image"] for n in config["nodes"]} == {default.group(1)}


# ------------------------------------------------------------------ docs/install.md examples


def _doc_blocks() -> list[str]:
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def _doc_lockstores() -> list[tuple[dict[str, Any], str | None]]:
    """Each LockStore example of docs/install.md with the ``renders`` block that follows it."""
    blocks = _doc_blocks()
    found = []
    for i, block in enumerate(blocks):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and doc.get("kind") == "LockStore":
            following = blocks[i + 1] if i + 1 < len(blocks) else ""
            found.append((doc, following if following.startswith("lock_store:") else None))
    return found


def test_install_docs_show_a_lockstore_for_every_mode() -> None:
    modes = {doc["spec"]["redis"]["deploymentMode"] for doc, _ in _doc_lockstores()}
    assert modes == {"standard", "cluster", "sentinel"}


@pytest.mark.parametrize(
    ("store", "rendered"),
    _doc_lockstores(),
    ids=lambda v: v["spec"]["redis"]["deploymentMode"] if isinstance(v, dict) else "",
)
def test_install_docs_lockstore_is_accepted_and_renders_as_shown(
    control_plane: ControlPlane,
    e2e_namespace: str,
    tmp_path: Path,
    store: dict[str, Any],
    rendered: str | None,
) -> None:
    if not CRDS:
        pytest.skip("crds/ holds no CRDs yet")
    doc = dict(store, metadata={"name": store["metadata"]["name"]})
    proc = control_plane.kubectl(
        "-n", e2e_namespace, "apply", "--dry-run=server", "-f", "-",
        stdin=yaml.safe_dump(doc), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    if rendered is None:
        return
    manifest = tmp_path / "store.yaml"
    manifest.write_text(yaml.safe_dump(store))
    out = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "turnstile"), "render", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == yaml.safe_load(rendered)
