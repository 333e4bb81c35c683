"""Specs that slipped past the CRD schema end in a SpecError naming the field and the rule."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import KINDS, LOCK_STORE, TIMER_STORE
from turnstile.operator.model.specs import RULES, parse_spec, parse_store


def _spec(**redis: Any) -> dict[str, Any]:
    return {"redis": {"host": "redis", **redis}}


def test_defaults_follow_rasa() -> None:
    store = parse_spec("LockStore", _spec())
    assert store.redis.deployment_mode == "standard"
    assert store.redis.port == 6379
    assert store.implementation == "turnstile"
    assert store.config_map is None
    assert store.redis.db is None  # Rasa's own default applies when unset


def test_sentinel_defaults_service_name() -> None:
    store = parse_spec(
        "TimerStore",
        {"redis": {"deploymentMode": "sentinel", "endpoints": ["s1:26379"]}},
    )
    assert store.redis.sentinel_service == "mymaster"


def test_config_map_key_defaults_to_endpoints_yml() -> None:
    store = parse_spec("LockStore", {**_spec(), "configMap": {"name": "bot"}})
    assert store.config_map is not None
    assert store.config_map.key == "endpoints.yml"


def test_parse_store_reads_metadata() -> None:
    store = parse_store(
        {
            "kind": "TimerStore",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u-1", "generation": 4},
            "spec": {**_spec(), "pollInterval": 0.5},
        }
    )
    assert (store.name, store.namespace, store.uid, store.generation) == ("t", "ns", "u-1", 4)
    assert store.poll_interval == 0.5


@pytest.mark.parametrize(
    ("kind", "spec", "field", "text"),
    [
        ("LockStore", {}, "spec.redis", "Redis connection settings"),
        ("LockStore", _spec(deploymentMode="replicated"), "spec.redis.deploymentMode",
         "one of standard, cluster, sentinel"),
        ("LockStore", _spec(port=0), "spec.redis.port", "from 1 to 65535"),
        ("LockStore", _spec(port=70000), "spec.redis.port", "from 1 to 65535"),
        ("LockStore", {"redis": {"deploymentMode": "sentinel"}}, "spec.redis.endpoints",
         RULES["sentinel_endpoints"]),
        ("LockStore", {"redis": {"deploymentMode": "cluster", "endpoints": ["a:1"], "db": 2}},
         "spec.redis.db", RULES["cluster_db"]),
        ("LockStore", {"redis": {"deploymentMode": "cluster"}}, "spec.redis.endpoints",
         RULES["cluster_nodes"]),
        ("LockStore", {"redis": {}}, "spec.redis.host", RULES["standard_host"]),
        ("LockStore", _spec(endpoints=["a:1"]), "spec.redis.endpoints",
         RULES["standard_endpoints"]),
        ("LockStore", _spec(sentinelService="m"), "spec.redis.sentinelService",
         RULES["sentinel_service"]),
        ("LockStore", {"redis": {"deploymentMode": "cluster", "endpoints": ["nohost"]}},
         "spec.redis.endpoints[0]", RULES["endpoint"]),
        ("LockStore", {"redis": {"deploymentMode": "cluster", "endpoints": ["h:99999"]}},
         "spec.redis.endpoints[0]", RULES["endpoint"]),
        ("LockStore", _spec(host="redis://x"), "spec.redis.host", RULES["host_scheme"]),
        ("LockStore", _spec(keyPrefix="bad-prefix"), "spec.redis.keyPrefix",
         RULES["key_prefix"]),
        ("LockStore", _spec(db=-1), "spec.redis.db", "an integer from 0"),
        ("LockStore", _spec(socketTimeout=0), "spec.redis.socketTimeout", "from 0.1 to 300"),
        ("LockStore", _spec(username="u"), "spec.redis.username", RULES["username_password"]),
        ("LockStore", _spec(passwordSecretRef={"key": "p"}), "spec.redis.passwordSecretRef.name",
         "name of a Secret"),
        ("LockStore", _spec(tls={"caSecretRef": {"name": "ca"}}), "spec.redis.tls.enabled",
         RULES["tls_refs"]),
        ("LockStore", {**_spec(), "implementation": "other"}, "spec.implementation",
         "one of turnstile, rasa"),
        ("LockStore", {**_spec(), "configMap": {"name": "Bad_Name"}}, "spec.configMap.name",
         "ConfigMap name"),
        ("LockStore", {**_spec(), "lockLifetime": 0}, "spec.lockLifetime", "from 1 to 86400"),
        ("LockStore", {**_spec(), "durableReplicas": 17}, "spec.durableReplicas",
         "from 0 to 16"),
        ("LockStore", {**_spec(), "durableReplicas": 1, "implementation": "rasa"},
         "spec.durableReplicas", RULES["durable_rasa"]),
        ("LockStore", _spec(failoverTimeout=601), "spec.redis.failoverTimeout",
         "from 0 to 600"),
        ("TimerStore", {**_spec(failoverTimeout=90), "implementation": "rasa"},
         "spec.redis.failoverTimeout", RULES["failover_rasa"]),
        ("TimerStore", {**_spec(), "pollInterval": -1}, "spec.pollInterval", "from 0.05 to 60"),
        ("TimerStore", {**_spec(), "pollInterval": 1e-05}, "spec.pollInterval",
         "from 0.05 to 60"),
        ("LockStore", {**_spec(), "configMap": {"name": "bot", "key": ".."}},
         "spec.configMap.key", "not '.' or '..'"),
        ("LockStore", _spec(host="redis:6379"), "spec.redis.host", "must not contain a port"),
        ("LockStore", _spec(host="redis\n"), "spec.redis.host", "spaces, tabs or newlines"),
        ("LockStore", _spec(username="${U}", passwordSecretRef={"name": "a"}),
         "spec.redis.username", "must not contain ${"),
    ],
)
def test_invalid_specs_name_the_field_and_the_rule(
    kind: str, spec: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(kind, spec)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert text in caught.value.message
    assert caught.value.reason == "InvalidSpec"


def test_kinds_have_distinct_sections_env_and_paths() -> None:
    assert set(KINDS) == {"LockStore", "TimerStore"}
    assert LOCK_STORE.password_env == "TURNSTILE_LOCK_STORE_PASSWORD"
    assert TIMER_STORE.password_env == "TURNSTILE_TIMER_STORE_PASSWORD"
    assert LOCK_STORE.tls_dir == "/etc/turnstile/lock_store"
    assert TIMER_STORE.tls_dir == "/etc/turnstile/timer_store"
    assert (LOCK_STORE.short_name, TIMER_STORE.short_name) == ("lks", "tms")
