"""``turnstile-rasa run`` checks the file the pod's Rasa reads the stores from: an engine
project's ``integrations.yml`` (``TURNSTILE_STORES_FILE=integrations``, which the operator sets
for ``spec.configMap.format: integrations``), and refuses a choice the project's layout
contradicts (``turnstile.rasa.startup``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from turnstile.operator.decide.render import Target, plain_env, render_files
from turnstile.operator.model.specs import StoreSpec, parse_spec
from turnstile.rasa.startup import StartRefused, stores_file, wait_until_safe
from turnstile.stores.errors import ConfigurationError

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "redis": {"deploymentMode": "standard", "host": "10.0.0.7", "keyPrefix": "bot",
              "passwordSecretRef": {"name": "auth"}},
    "configMap": {"name": "bot-integrations", "format": "integrations"},
}  # fmt: skip
#: An engine project's own integrations.yml: model groups, MCP servers, a tracker store.
USER_FILE = (
    "# owned by the bot team\n"
    "model_groups:\n  - id: default\n    models:\n      - provider: openai\n"
    "        model: gpt-4o\n        api_key: ${OPENAI_API_KEY}\n"
    "tracker_store:\n  type: redis\n  host: 10.0.0.7\n  port: 06379\n"
)


def _store() -> StoreSpec:
    return parse_spec("LockStore", SPEC, namespace="bots", name="locks")


def _env(root: Path, **extra: str) -> dict[str, str]:
    """What the operator injects for the store (with injectEnv), plus the project root."""
    env = dict(plain_env("LockStore", _store()))
    return {**env, "RASA_PROJECT_FOLDER": str(root), "TURNSTILE_STARTUP_WAIT_SECONDS": "0",
            "TURNSTILE_TERMINATION_LOG": str(root / "termination-log"), **extra}  # fmt: skip


def _engine_project(root: Path, integrations: str) -> Path:
    (root / "agent.yml").write_text("name: bot\n")
    (root / "skills" / "greet").mkdir(parents=True)
    (root / "skills" / "greet" / "skill.md").write_text("# greet\n")
    (root / "integrations.yml").write_text(integrations)
    return root


def _rendered() -> str:
    where = Target("bots", "bot-integrations", "integrations.yml")
    return render_files([_store()], {where: USER_FILE})[where]


def test_the_operator_tells_the_pod_to_check_integrations_yml() -> None:
    env = dict(plain_env("LockStore", _store()))
    assert env["TURNSTILE_STORES_FILE"] == "integrations"
    endpoints_store = {**SPEC, "configMap": {"name": "bot-endpoints"}}
    assert "TURNSTILE_STORES_FILE" not in dict(plain_env("LockStore", endpoints_store))


def test_rasa_starts_on_the_rendered_integrations_yml(tmp_path: Path) -> None:
    root = _engine_project(tmp_path, _rendered())
    # the --endpoints file (absent here) is not what an engine project reads, nor checked
    wait_until_safe(["run", "--endpoints", str(tmp_path / "nowhere.yml")], _env(root))


def test_integrations_yml_without_the_section_is_refused(tmp_path: Path) -> None:
    root = _engine_project(tmp_path, USER_FILE)  # a helm upgrade wrote it back without ours
    (tmp_path / "endpoints.yml").write_text(_rendered())  # ignored by an engine project
    with pytest.raises(StartRefused) as refused:
        wait_until_safe(["run", "--endpoints", str(tmp_path / "endpoints.yml")], _env(root))
    reason = str(refused.value)
    assert f"{root / 'integrations.yml'} has no lock_store section" in reason
    assert "its in-memory lock store" in reason
    assert "OPENAI_API_KEY" not in reason and "10.0.0.7" not in reason
    assert reason in (root / "termination-log").read_text()


def test_an_engine_project_checked_as_endpoints_is_refused(tmp_path: Path) -> None:
    """Without TURNSTILE_STORES_FILE the launcher would check endpoints.yml, which an engine
    project never reads: it says so instead of starting Rasa on its in-memory lock store."""
    root = _engine_project(tmp_path, USER_FILE)
    (tmp_path / "endpoints.yml").write_text(_rendered())
    env = {k: v for k, v in _env(root).items() if k != "TURNSTILE_STORES_FILE"}
    with pytest.raises(StartRefused) as refused:
        wait_until_safe(["run", "--endpoints", str(tmp_path / "endpoints.yml")], env)
    assert "is a Rasa Pro engine project" in str(refused.value)
    assert "set TURNSTILE_STORES_FILE=integrations" in str(refused.value)


def test_a_calm_project_checked_as_integrations_is_refused(tmp_path: Path) -> None:
    (tmp_path / "domain.yml").write_text("version: '3.1'\n")
    (tmp_path / "integrations.yml").write_text(_rendered())
    with pytest.raises(StartRefused) as refused:
        wait_until_safe(["run"], _env(tmp_path))
    assert "is a CALM project (domain.yml)" in str(refused.value)
    assert "unset TURNSTILE_STORES_FILE" in str(refused.value)


def test_the_project_root_is_the_working_directory_without_rasa_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"TURNSTILE_STORES_FILE": "integrations"}
    assert stores_file(["--endpoints", "/app/endpoints.yml"], env) == (
        str(tmp_path / "integrations.yml"), "integrations",
    )  # fmt: skip
    assert stores_file(["--endpoints", "/app/endpoints.yml"], {}) == (
        "/app/endpoints.yml", "endpoints",
    )  # fmt: skip


def test_a_bad_value_names_the_variable_and_what_it_accepts() -> None:
    with pytest.raises(ConfigurationError) as bad:
        wait_until_safe(["run"], {"TURNSTILE_STORES_FILE": "integrations.yml",
                                  "TURNSTILE_REQUIRE_SECTIONS": "lock_store"})  # fmt: skip
    message = str(bad.value)
    assert "TURNSTILE_STORES_FILE" in message and "'integrations.yml'" in message
    assert "endpoints (the --endpoints file) or integrations" in message
