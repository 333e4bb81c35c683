"""The CRD files in crds/ are the generator's output, structural, and share spec.redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from turnstile.operator.model.crds import crd, file_name, main, render_crd
from turnstile.operator.model.kinds import KINDS, LOCK_STORE, TIMER_STORE
from turnstile.operator.model.specs import RULES

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crd_files_are_up_to_date() -> None:
    for info in KINDS.values():
        path = CRDS / file_name(info)
        assert path.read_text() == render_crd(info), (
            f"{path} is stale: run `python -m turnstile.operator.model.crds --write crds/`"
        )


def test_generator_writes_the_files(tmp_path: Path) -> None:
    assert main(["--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "turnstile.dev_lockstores.yaml", "turnstile.dev_timerstores.yaml"
    ]


def _schema(info: Any) -> dict[str, Any]:
    return crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_both_kinds_share_redis_implementation_configmap_and_rollout() -> None:
    lock = _schema(LOCK_STORE)["properties"]["spec"]
    timer = _schema(TIMER_STORE)["properties"]["spec"]
    for field in ("redis", "rollout"):
        assert lock["properties"][field] == timer["properties"][field]
    for field in ("configMap", "implementation"):  # same fields; descriptions name the kind
        assert lock["properties"][field].keys() == timer["properties"][field].keys()
    assert "lockLifetime" in lock["properties"] and "pollInterval" not in lock["properties"]
    assert "pollInterval" in timer["properties"] and "lockLifetime" not in timer["properties"]
    rollout = lock["properties"]["rollout"]["properties"]
    assert rollout["injectEnv"] == {**rollout["injectEnv"], "type": "boolean", "default": False}
    assert rollout["workloads"]["items"]["properties"]["kind"]["enum"] == [
        "Deployment", "StatefulSet"
    ]
    assert set(rollout["selector"]["properties"]) == {"matchLabels", "matchExpressions"}


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "type" in node or "properties" in node:
            found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural_and_spec_fields_are_described() -> None:
    for info in KINDS.values():
        for path, node in _walk(_schema(info)):
            assert "type" in node, f"{info.kind}{path} has no type"
            if path.startswith(".spec.") and node["type"] == "object" and "properties" in node:
                for key, child in node["properties"].items():
                    assert child.get("description"), f"{info.kind}{path}.{key} lacks a description"


def test_cel_messages_are_the_operators_rule_texts() -> None:
    messages = {
        rule["message"]
        for info in KINDS.values()
        for _, node in _walk(_schema(info))
        for rule in node.get("x-kubernetes-validations", [])
    }
    assert messages == set(RULES.values())


def test_names_columns_category_and_status_subresource() -> None:
    for info in KINDS.values():
        spec = crd(info)["spec"]
        assert spec["names"]["shortNames"] == [info.short_name]
        assert spec["names"]["categories"] == ["turnstile"]
        assert spec["scope"] == "Namespaced"
        version = spec["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[:3] == ["Mode", "Ready", "Reason"] and columns[-1] == "Age"


def test_the_files_are_valid_yaml_documents() -> None:
    for info in KINDS.values():
        doc = yaml.safe_load((CRDS / file_name(info)).read_text())
        assert doc["metadata"]["name"] == f"{info.plural}.turnstile.dev"
