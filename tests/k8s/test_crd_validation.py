"""The API server itself refuses invalid stores, with a message a person can act on.

Every entry of the catalogue is sent with ``kubectl apply --dry-run=server`` to the real
kube-apiserver with Turnstile's CRDs installed; the OpenAPI schema and the CEL rules in
``crds/`` must refuse it and the message must say why.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.platform.control_plane import ControlPlane
from turnstile.operator.model.specs import RULES

pytestmark = pytest.mark.k8s

CRDS = Path(__file__).resolve().parents[2] / "crds"


def install_crds(cp: ControlPlane) -> None:
    """``kubectl apply -f crds/`` and wait (bounded) until both are Established."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/lockstores.turnstile.dev", "crd/timerstores.turnstile.dev",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # discovery catches up a moment after Established
        if cp.kubectl("get", "lks", "-A", check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the lockstores resource was not served within 30s")


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


def _manifest(kind: str, spec: dict[str, Any], namespace: str) -> str:
    return json.dumps({
        "apiVersion": "turnstile.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": spec,
    })


def _redis(**fields: Any) -> dict[str, Any]:
    return {"redis": {"host": "redis", **fields}}


CATALOGUE: list[tuple[str, str, dict[str, Any], str]] = [
    ("no-redis", "LockStore", {}, 'spec.redis: Required value'),
    ("unknown-mode", "LockStore", _redis(deploymentMode="replicated"),
     'Unsupported value: "replicated"'),
    ("port-zero", "LockStore", _redis(port=0), "should be greater than or equal to 1"),
    ("port-too-big", "TimerStore", _redis(port=70000), "should be less than or equal to 65535"),
    ("sentinel-no-endpoints", "LockStore", {"redis": {"deploymentMode": "sentinel"}},
     RULES["sentinel_endpoints"]),
    ("cluster-db", "TimerStore",
     {"redis": {"deploymentMode": "cluster", "endpoints": ["n1:7000"], "db": 3}},
     RULES["cluster_db"]),
    ("cluster-no-nodes", "LockStore", {"redis": {"deploymentMode": "cluster"}},
     RULES["cluster_nodes"]),
    ("standard-no-host", "LockStore", {"redis": {"port": 6379}}, RULES["standard_host"]),
    ("standard-endpoints", "LockStore", _redis(endpoints=["n1:7000"]),
     RULES["standard_endpoints"]),
    ("sentinel-service-in-standard", "TimerStore", _redis(sentinelService="mymaster"),
     RULES["sentinel_service"]),
    ("endpoint-without-port", "LockStore",
     {"redis": {"deploymentMode": "cluster", "endpoints": ["n1"]}}, RULES["endpoint"]),
    ("endpoint-port-range", "LockStore",
     {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:99999"]}}, RULES["endpoint"]),
    ("host-with-scheme", "LockStore", _redis(host="redis://redis:6379"), RULES["host_scheme"]),
    ("key-prefix", "TimerStore", _redis(keyPrefix="bot-1"), RULES["key_prefix"]),
    ("negative-db", "LockStore", _redis(db=-1), "should be greater than or equal to 0"),
    ("zero-socket-timeout", "LockStore", _redis(socketTimeout=0),
     RULES["socket_timeout"]),
    ("socket-timeout-below-the-floor", "TimerStore", _redis(socketTimeout=0.0001),
     "spec.redis.socketTimeout: Invalid value: 0.0001: spec.redis.socketTimeout in body should "
     "be greater than or equal to 0.1"),
    ("failover-timeout-with-rasa", "TimerStore",
     {**_redis(failoverTimeout=90), "implementation": "rasa"}, RULES["failover_rasa"]),
    ("failover-timeout-too-long", "LockStore", _redis(failoverTimeout=601),
     "should be less than or equal to 600"),
    ("username-without-password", "LockStore", _redis(username="bot"),
     RULES["username_password"]),
    ("password-ref-without-name", "LockStore", _redis(passwordSecretRef={"key": "pw"}),
     "passwordSecretRef.name: Required value"),
    ("tls-refs-while-disabled", "TimerStore", _redis(tls={"caSecretRef": {"name": "ca"}}),
     RULES["tls_refs"]),
    ("unknown-implementation", "LockStore", {**_redis(), "implementation": "custom"},
     'Unsupported value: "custom"'),
    ("configmap-name", "LockStore", {**_redis(), "configMap": {"name": "Bad_Name"}},
     "spec.configMap.name"),
    ("lock-lifetime", "LockStore", {**_redis(), "lockLifetime": 0},
     "should be greater than or equal to 1"),
    ("poll-interval", "TimerStore", {**_redis(), "pollInterval": -1},
     "should be greater than or equal to 0"),
    ("zero-poll-interval", "TimerStore", {**_redis(), "pollInterval": 0},
     RULES["poll_interval"]),
    ("poll-interval-busy-loop", "TimerStore", {**_redis(), "pollInterval": 1e-05},
     "spec.pollInterval: Invalid value: 1e-05: spec.pollInterval in body should be greater "
     "than or equal to 0.05"),
    ("configmap-key-dot", "LockStore", {**_redis(), "configMap": {"name": "bot", "key": "."}},
     RULES["configmap_key"]),
    ("configmap-key-dotdot", "LockStore",
     {**_redis(), "configMap": {"name": "bot", "key": ".."}}, RULES["configmap_key"]),
    ("configmap-key-slash", "LockStore",
     {**_redis(), "configMap": {"name": "bot", "key": "a/b"}}, "spec.configMap.key"),
    ("configmap-format-unknown", "LockStore",
     {**_redis(), "configMap": {"name": "bot", "format": "yaml"}},
     'spec.configMap.format: Unsupported value: "yaml": supported values: "endpoints", '
     '"integrations"'),
    ("configmap-integrations-key-as-endpoints", "TimerStore",
     {**_redis(), "configMap": {"name": "bot", "key": "integrations.yml"}},
     "spec.configMap.key: Invalid value: " + RULES["configmap_format"]
     + " (got key integrations.yml with format endpoints)"),
    ("configmap-endpoints-key-as-integrations", "LockStore",
     {**_redis(), "configMap": {"name": "bot", "key": "endpoints.yml",
                                "format": "integrations"}}, RULES["configmap_format"]),
    ("host-with-port", "LockStore", _redis(host="redis:6379"), RULES["host_port"]),
    ("host-with-space", "LockStore", _redis(host="redis master"), RULES["host_space"]),
    ("host-with-newline", "TimerStore", _redis(host="redis\n"), RULES["host_space"]),
    ("username-with-var", "LockStore",
     _redis(username="${BOT_USER}", passwordSecretRef={"name": "auth"}), RULES["username_var"]),
    ("sentinel-auth-in-standard", "LockStore",
     _redis(sentinel={"passwordSecretRef": {"name": "sentinel-auth"}}), RULES["sentinel_auth"]),
    ("sentinel-tls-in-cluster", "TimerStore",
     {"redis": {"deploymentMode": "cluster", "endpoints": ["n1:7000"],
                "tls": {"enabled": True}, "sentinel": {"tls": True}}}, RULES["sentinel_auth"]),
    ("sentinel-username-without-password", "LockStore",
     {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                "sentinel": {"username": "u"}}}, RULES["sentinel_username_password"]),
    ("sentinel-username-with-var", "LockStore",
     {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                "sentinel": {"username": "${U}", "passwordSecretRef": {"name": "a"}}}},
     RULES["sentinel_username_var"]),
    ("sentinel-tls-without-tls", "TimerStore",
     {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                "sentinel": {"tls": True}}}, RULES["sentinel_tls"]),
    ("sentinel-password-ref-without-name", "LockStore",
     {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                "sentinel": {"passwordSecretRef": {"key": "pw"}}}},
     "sentinel.passwordSecretRef.name: Required value"),
    ("tls-verify-type", "LockStore", _redis(tls={"enabled": True, "verify": "no"}),
     "spec.redis.tls.verify: Invalid value"),
    ("rollout-kind", "LockStore",
     {**_redis(), "rollout": {"workloads": [{"kind": "DaemonSet", "name": "bot"}]}},
     'Unsupported value: "DaemonSet"'),
    ("rollout-inject-env-type", "LockStore", {**_redis(), "rollout": {"injectEnv": "yes"}},
     "spec.rollout.injectEnv: Invalid value"),
    ("selector-in-without-values", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchExpressions": [
         {"key": "app", "operator": "In"}]}}},
     "spec.rollout.selector.matchExpressions[0].values: Invalid value: "),
    ("selector-notin-empty-values", "TimerStore",
     {**_redis(), "rollout": {"selector": {"matchExpressions": [
         {"key": "app", "operator": "NotIn", "values": []}]}}},
     RULES["selector_values"]),
    ("selector-exists-with-values", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchExpressions": [
         {"key": "app", "operator": "Exists", "values": ["bot"]}]}}},
     RULES["selector_no_values"]),
    ("label-value-too-long", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchLabels": {"app": "b" * 10_000}}}},
     "spec.rollout.selector.matchLabels.app: Too long: may not be more than 63 bytes"),
    ("label-value-bad-ends", "TimerStore",
     {**_redis(), "rollout": {"selector": {"matchLabels": {"app": "-bot"}}}},
     RULES["label_value"]),
    ("label-key-with-space", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchLabels": {"bad key": "bot"}}}},
     RULES["label_key"] + ' (got "bad key")'),
    ("label-key-name-too-long", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchLabels": {"x" * 64: "bot"}}}},
     RULES["label_key"] + f' (got "{"x" * 60}...")'),
    ("label-key-prefix-too-long", "TimerStore",
     {**_redis(), "rollout": {"selector": {"matchLabels": {"a" * 254 + "/app": "bot"}}}},
     RULES["label_key"]),
    ("expression-key-bad", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchExpressions": [
         {"key": "Upper.Case/app", "operator": "Exists"}]}}},
     RULES["label_key"]),
    ("expression-value-bad", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchExpressions": [
         {"key": "app", "operator": "In", "values": ["bot", "bot/1"]}]}}},
     RULES["label_value"]),
    ("selector-empty-key", "LockStore",
     {**_redis(), "rollout": {"selector": {"matchExpressions": [
         {"key": "", "operator": "Exists"}]}}},
     "spec.rollout.selector.matchExpressions[0].key: Invalid value: "),
]


def test_catalogue_is_big_enough() -> None:
    assert len(CATALOGUE) >= 15


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [pytest.param(k, s, m, id=i) for i, k, s, m in CATALOGUE],
)
def test_api_server_refuses_invalid_store(
    crds: ControlPlane, kind: str, spec: dict[str, Any], message: str
) -> None:
    proc = crds.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=_manifest(kind, spec, "default"), check=False
    )
    assert proc.returncode != 0, f"the API server accepted {spec}"
    assert message in proc.stderr, proc.stderr
    assert "is invalid" in proc.stderr


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("LockStore", {"redis": {"host": "redis"}, "configMap": {"name": "bot"}}),
        ("LockStore", {"redis": {"host": "::1"}, "configMap": {"name": "bot"}}),
        ("LockStore", {"redis": {"host": "redis"},
                       "configMap": {"name": "bot", "format": "integrations"}}),
        ("TimerStore", {"redis": {"host": "redis"},
                        "configMap": {"name": "bot", "format": "integrations",
                                      "key": "integrations.yml"}}),
        ("LockStore", {"redis": {"host": "redis"}, "configMap": {"name": "rasa-configmap",
                                                                 "key": "endpoints"}}),
        ("TimerStore", {"redis": {"host": "fd00::10"}, "pollInterval": 0.05}),
        ("LockStore", {"redis": {"deploymentMode": "cluster",
                                 "endpoints": ["n1:7000", "[::1]:7001"], "db": 0}}),
        ("TimerStore", {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                                  "sentinelService": "main", "db": 2, "username": "bot",
                                  "passwordSecretRef": {"name": "auth"},
                                  "tls": {"enabled": True, "caSecretRef": {"name": "ca"},
                                          "clientCertSecretRef": {"name": "client"}}},
                        "implementation": "rasa", "pollInterval": 0.5,
                        "rollout": {"workloads": [{"kind": "Deployment", "name": "bot"}],
                                    "selector": {"matchLabels": {
                                        "app": "bot", "app.kubernetes.io/name": "rasa-1.x_y",
                                        "empty": "", "a" * 253 + "/" + "n" * 63: "v" * 63},
                                                 "matchExpressions": [
                                                     {"key": "tier", "operator": "In",
                                                      "values": ["rasa"]},
                                                     {"key": "old", "operator": "DoesNotExist"},
                                                 ]},
                                    "injectEnv": True}}),
        ("LockStore", {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                                 "sentinel": {"username": "sentinel-user",
                                              "passwordSecretRef": {"name": "sentinel-auth",
                                                                    "key": "pw"},
                                              "tls": True},
                                 "tls": {"enabled": True, "verify": False,
                                         "checkHostname": False}}}),
        ("TimerStore", {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"],
                                  "sentinel": {"passwordSecretRef": {"name": "sentinel-auth"}}}}),
    ],
)
def test_api_server_accepts_valid_stores_and_applies_defaults(
    crds: ControlPlane, kind: str, spec: dict[str, Any]
) -> None:
    proc = crds.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-",
        stdin=_manifest(kind, spec, "default"),
    )
    applied = json.loads(proc.stdout)["spec"]
    assert applied["implementation"] in ("turnstile", "rasa")
    assert applied["redis"]["deploymentMode"] in ("standard", "cluster", "sentinel")
    if "configMap" in applied:  # the key's default depends on the format: the operator's
        assert applied["configMap"]["format"] in ("endpoints", "integrations")
        assert applied["configMap"].get("key") == spec["configMap"].get("key")
    for field in ("sentinel", "tls"):  # kept as sent, not pruned (defaults aside)
        for key, value in spec["redis"].get(field, {}).items():
            kept = applied["redis"][field][key]
            if isinstance(value, dict):
                kept = {k: v for k, v in kept.items() if k in value}
            assert kept == value


def test_kubectl_explain_describes_the_fields(crds: ControlPlane) -> None:
    out = crds.kubectl("explain", "lockstore.spec.redis.passwordSecretRef").stdout
    assert "TURNSTILE_LOCK_STORE_PASSWORD" in out
    out = crds.kubectl("explain", "lockstore.spec.redis.sentinel.passwordSecretRef").stdout
    assert "TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD" in out
    out = crds.kubectl("explain", "timerstore.spec.pollInterval").stdout
    assert "expired timers" in out


def test_short_names_and_category(crds: ControlPlane) -> None:
    assert crds.kubectl("get", "lks,tms", "-A", check=False).returncode == 0
    assert crds.kubectl("get", "turnstile", "-A", check=False).returncode == 0


EXAMPLES = sorted((CRDS.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted_by_the_api_server(crds: ControlPlane, path: Path) -> None:
    proc = crds.kubectl(
        "apply", "-n", "default", "--dry-run=server", "-f", str(path), check=False
    )
    assert proc.returncode == 0, proc.stderr
