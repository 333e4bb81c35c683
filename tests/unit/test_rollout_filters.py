"""Which watch events poke a namespace: structural changes yes, status churn no."""

from __future__ import annotations

from typing import Any

from turnstile.operator.handlers.rollout import (
    REFERENCED,
    _config_map_relevant,
    _secret_referenced,
    _store_changed,
    _workload_changed,
)


def workload(rv: str, labels: dict[str, str], replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "bot", "uid": "u1", "resourceVersion": rv, "labels": labels},
        "status": {"replicas": replicas},
    }


def seen(filter_: Any, type_: str | None, body: dict[str, Any]) -> bool:
    return bool(
        filter_(event={"type": type_}, body=body, namespace="ns", uid=body["metadata"]["uid"])
    )


def test_workload_pokes_on_listing_add_label_change_and_delete_only() -> None:
    assert seen(_workload_changed, None, workload("1", {"app": "bot"}))  # initial listing
    assert not seen(_workload_changed, "MODIFIED", workload("2", {"app": "bot"}, replicas=2))
    assert seen(_workload_changed, "MODIFIED", workload("3", {"app": "bot", "tier": "rasa"}))
    # kopf may evaluate a filter more than once per event: same answer each time.
    assert seen(_workload_changed, "MODIFIED", workload("3", {"app": "bot", "tier": "rasa"}))
    assert not seen(_workload_changed, "MODIFIED", workload("4", {"app": "bot", "tier": "rasa"}))
    assert seen(_workload_changed, "DELETED", workload("5", {"app": "bot", "tier": "rasa"}))


def store(rv: str, generation: int, prefix: str, status: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": "locks", "namespace": "ns-f", "uid": "s1", "resourceVersion": rv,
                     "generation": generation},
        "spec": {"redis": {"keyPrefix": prefix, "passwordSecretRef": {"name": "auth"}},
                 "configMap": {"name": "cm"}},
        "status": {"conditions": [{"type": "Ready", "status": status}]},
    }  # fmt: skip


def test_store_pokes_on_spec_changes_not_on_status_or_annotations() -> None:
    assert seen(_store_changed, "ADDED", store("1", 1, "a"))
    assert not seen(_store_changed, "MODIFIED", store("2", 1, "a", status="True"))
    assert seen(_store_changed, "MODIFIED", store("3", 2, "b", status="True"))
    assert REFERENCED.secrets["ns-f"] >= {"auth"}


def test_config_maps_and_secrets_are_filtered_to_what_stores_use() -> None:
    managed = {"app.kubernetes.io/managed-by": "turnstile"}
    assert _config_map_relevant(labels=managed, name="any", namespace="ns")
    assert not _config_map_relevant(labels={}, name="kube-root-ca.crt", namespace="ns")
    REFERENCED.config_maps["ns-g"] = {"bot-endpoints"}
    REFERENCED.secrets["ns-g"] = {"redis-auth"}
    assert _config_map_relevant(labels={}, name="bot-endpoints", namespace="ns-g")
    assert _secret_referenced(name="redis-auth", namespace="ns-g")
    assert not _secret_referenced(name="default-token", namespace="ns-g")
