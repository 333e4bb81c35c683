"""``spec.configMap.format``: a store renders into an engine project's ``integrations.yml`` as
into an ``endpoints.yml`` (the same sections, every other byte of the user's file kept), and
``turnstile render`` writes either."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from turnstile.cli import main
from turnstile.operator.decide.configmaps import Owner, with_section
from turnstile.operator.decide.render import Target, render_files, section
from turnstile.operator.model.crds import crd
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import KINDS
from turnstile.operator.model.specs import configmap_key, parse_spec

pytestmark = pytest.mark.unit

REDIS = {"deploymentMode": "standard", "host": "redis.bots.svc"}
#: An engine project's integrations.yml as its team wrote it (YAML 1.2 details Rasa relies on).
USER_FILE = """\
# integrations.yml of the bot team
model_groups:
  - id: default
    models:
      - provider: openai
        model: gpt-4o
        api_key: ${OPENAI_API_KEY}   # expanded by Rasa, never by Turnstile
tracker_store:
  type: redis
  host: "${TRACKER_HOST}"
  port: 06379
  use_ssl: off
mcp_servers:
  - name: crm
    url: http://crm:8080/mcp
"""


def _spec(**config_map: Any) -> dict[str, Any]:
    return {"redis": REDIS, "configMap": {"name": "bot", **config_map}}


@pytest.mark.parametrize(
    ("config_map", "key", "fmt"),
    [
        ({}, "endpoints.yml", "endpoints"),
        ({"format": "integrations"}, "integrations.yml", "integrations"),
        ({"format": "integrations", "key": "integrations"}, "integrations", "integrations"),
        ({"key": "endpoints"}, "endpoints", "endpoints"),  # Rasa's chart names its key so
    ],
)
def test_the_key_defaults_by_format(config_map: dict[str, Any], key: str, fmt: str) -> None:
    store = parse_spec("LockStore", _spec(**config_map), namespace="bots", name="locks")
    assert store.config_map is not None
    assert (store.config_map.key, store.config_map.format) == (key, fmt)
    assert configmap_key(config_map) == key  # the lenient reader agrees


@pytest.mark.parametrize(
    ("config_map", "message"),
    [
        ({"format": "yaml"},
         "spec.configMap.format: one of endpoints, integrations (got 'yaml')"),
        ({"key": "integrations.yml"},
         "spec.configMap.key: configMap.key endpoints.yml or integrations.yml must match "
         "configMap.format"),
        ({"format": "integrations", "key": "endpoints.yml"}, "(got 'endpoints.yml')"),
    ],
)  # fmt: skip
def test_a_bad_format_names_the_field_the_value_and_what_is_accepted(
    config_map: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as bad:
        parse_spec("TimerStore", _spec(**config_map), namespace="bots", name="timers")
    assert message in str(bad.value)


def test_the_crd_defaults_the_format_and_refuses_the_same_keys() -> None:
    config_map = crd(KINDS["LockStore"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]["configMap"]  # fmt: skip
    assert config_map["properties"]["format"]["enum"] == ["endpoints", "integrations"]
    assert config_map["properties"]["format"]["default"] == "endpoints"
    assert "default" not in config_map["properties"]["key"]  # it depends on the format
    (rule,) = [r for r in config_map["x-kubernetes-validations"] if r["fieldPath"] == ".key"]
    assert "must match configMap.format" in rule["message"]


def test_the_section_goes_into_integrations_yml_and_every_other_byte_stays() -> None:
    store = parse_spec("LockStore", _spec(format="integrations"), namespace="bots", name="locks")
    owner = Owner("turnstile.dev/v1alpha1", "LockStore", "locks", "uid-1")
    existing = {"metadata": {"name": "bot", "namespace": "bots"},
                "data": {"integrations.yml": USER_FILE}}  # fmt: skip
    body = with_section(
        existing, namespace="bots", name="bot", key="integrations.yml", section="lock_store",
        content=section(store), owner=owner,
    )  # fmt: skip
    assert body is not None
    text = body["data"]["integrations.yml"]
    assert text.startswith(USER_FILE)  # comments, quotes, 06379 and off as written
    assert yaml.safe_load(text)["lock_store"] == section(store)


def test_render_writes_into_the_users_integrations_yml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = tmp_path / "stores.yaml"
    stores.write_text(yaml.safe_dump_all([
        {"apiVersion": "turnstile.dev/v1alpha1", "kind": kind, "metadata": {"name": "s"},
         "spec": _spec(format="integrations")}
        for kind in ("TimerStore", "LockStore")
    ]))  # fmt: skip
    base = tmp_path / "integrations.yml"
    base.write_text(USER_FILE)
    assert main(["render", str(stores), "--base", str(base)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(USER_FILE)
    loaded = yaml.safe_load(out)
    assert list(loaded)[-2:] == ["lock_store", "timer_store"]
    assert loaded["lock_store"]["type"] == "turnstile.rasa.TicketLockStore"
    where = Target("default", "bot", "integrations.yml")
    parsed = [parse_spec(k, _spec(format="integrations"), namespace="default", name="s")
              for k in ("LockStore", "TimerStore")]  # fmt: skip
    assert out == render_files(parsed, {where: USER_FILE})[where]  # what the operator writes


def test_render_refuses_a_base_rasa_could_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = tmp_path / "stores.yaml"
    stores.write_text(yaml.safe_dump({"apiVersion": "turnstile.dev/v1alpha1",
                                      "kind": "LockStore", "metadata": {"name": "s"},
                                      "spec": _spec(format="integrations")}))  # fmt: skip
    base = tmp_path / "integrations.yml"
    base.write_text("- a list\n")
    assert main(["render", str(stores), "--base", str(base)]) == 2
    err = capsys.readouterr().err
    assert f"--base {base}" in err and "mapping" in err


def test_render_with_a_base_and_a_transition_keeps_the_users_sections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def manifest(prefix: str) -> Path:
        path = tmp_path / f"{prefix}.yaml"
        spec = _spec(format="integrations")
        spec["redis"] = {**REDIS, "keyPrefix": prefix}
        path.write_text(yaml.safe_dump({"apiVersion": "turnstile.dev/v1alpha1",
                                        "kind": "LockStore", "metadata": {"name": "s"},
                                        "spec": spec}))  # fmt: skip
        return path

    base = tmp_path / "integrations.yml"
    base.write_text(USER_FILE)
    until = datetime(2030, 1, 1, tzinfo=timezone.utc).isoformat()
    code = main(["render", str(manifest("new")), "--base", str(base),
                 "--transition-from", str(manifest("old")), "--transition-until", until])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith(USER_FILE)
    lock = yaml.safe_load(out)["lock_store"]
    assert lock["key_prefix"] == "new" and lock["transition_from"]["key_prefix"] == "old"
