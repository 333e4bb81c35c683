"""``examples/rasa-charts/``: the values files of docs/rasa-charts.md wire Turnstile into Rasa's own
charts as the guide says.

Each values file uses only values the chart version it names declares (recorded below from the
charts' ``values.yaml``: RasaHQ/rasa-helm-charts ``charts/rasa`` 2.4.0 at 1eee5b44b92e,
RasaHQ/helm-charts ``charts/rasa`` 1.17.8 at 94fba4b4a18b). Rendering them through the real
current chart needs it fetched from GitHub, which CI cannot reach: ``make test-rasa-charts``
(tests/rasa_charts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "rasa-charts"

#: Values of charts/rasa 2.4.0 the examples may set, down to where the chart takes any object
#: (a volume, an env entry, a probe) from the user.
CURRENT_CHART_VALUES = {
    "fullnameOverride", "rasa.image.repository", "rasa.image.tag", "rasa.settings.endpoints",
    "rasa.settings.endpointsRaw", "rasa.settings.credentials",
    "rasa.settings.mountDefaultConfigmap", "rasa.command", "rasa.args", "rasa.additionalArgs",
    "rasa.additionalEnv", "rasa.envFrom", "rasa.podAnnotations", "rasa.volumes",
    "rasa.volumeMounts", "rasa.readinessProbe", "rasa.livenessProbe", "rasa.strategy",
    "rasa.replicaCount",
}  # fmt: skip
#: Values of charts/rasa 1.17.8 (Rasa Open Source) the examples may set.
LEGACY_CHART_VALUES = {
    "fullnameOverride", "image.repository", "image.tag", "applicationSettings.endpoints.lockStore",
    "command", "args", "extraArgs", "extraEnv", "volumes", "volumeMounts", "podAnnotations",
    "readinessProbe", "strategy", "replicaCount",
}  # fmt: skip
CHARTS = {
    "rasa-pro-chart.yaml": CURRENT_CHART_VALUES,
    "rasa-pro-chart-composed.yaml": CURRENT_CHART_VALUES,
    "rasa-pro-chart-engine.yaml": CURRENT_CHART_VALUES,
    "rasa-oss-legacy-chart.yaml": LEGACY_CHART_VALUES,
}


def _paths(values: Mapping[str, Any], known: set[str], prefix: str = "") -> Iterator[str]:
    """Every value path of ``values``, stopping at one the chart takes whole."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in known or not isinstance(value, Mapping):
            yield path
        else:
            yield from _paths(value, known, f"{path}.")


def _load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_case_of_the_guide_has_its_file() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted([*CHARTS, "deployment.yaml"])
    guide = (REPO / "docs" / "rasa-charts.md").read_text()
    for path in EXAMPLES.glob("*.yaml"):
        assert f"examples/rasa-charts/{path.name}" in guide


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_values_use_only_what_the_chart_declares(name: str) -> None:
    known = CHARTS[name]
    unknown = sorted(set(_paths(_load(name), known)) - known)
    assert not unknown, f"{name}: values its chart does not have: {unknown}"


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_the_bot_runs_turnstile_rasa_and_requires_the_sections(name: str) -> None:
    values = _load(name)
    container = values.get("rasa", values)
    assert container["command"] == ["turnstile-rasa"]
    env = {e["name"]: e["value"] for e in container.get("additionalEnv") or values["extraEnv"]}
    assert "lock_store" in env["TURNSTILE_REQUIRE_SECTIONS"]
    if "engine" in name:
        assert env["TURNSTILE_STORES_FILE"] == "integrations"


def test_the_plain_deployment_mounts_the_operators_configmap_as_a_directory() -> None:
    manifest = _load("deployment.yaml")
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["turnstile-rasa"]
    assert container["args"][:1] == ["run"]
    assert "/app/config/endpoints.yml" in container["args"]
    (mount,) = container["volumeMounts"]
    assert "subPath" not in mount and mount["mountPath"] == "/app/config"
    assert pod["volumes"] == [{"name": "endpoints", "configMap": {"name": "bot-endpoints"}}]
