"""The values files of ``examples/rasa-charts/`` rendered through Rasa's real current chart
(RasaHQ/rasa-helm-charts ``charts/rasa`` 2.4.0 at 1eee5b44b92e) with ``helm template``: the bot
container runs ``turnstile-rasa``, mounts the operator's ConfigMap the way docs/rasa-charts.md
says, and the chart's own endpoints file is neither rendered nor mounted.

``make test-rasa-charts`` fetches the chart into the cache (``hack/rasa-chart.sh``; it is never
copied into this repository) and runs this tier; it needs GitHub, so ``make test`` (whose CI
machine has no route to it) does not run it, and a missing chart fails here, never skips. The
legacy chart needs its dependencies from Rasa's repositories (``rasa-common``), so it is checked
by its keys only (tests/unit/test_rasa_charts.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.rasa_charts

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "rasa-charts"


def _helm() -> Path | None:
    try:
        out = subprocess.run(["bash", str(REPO / "hack" / "build-kube.sh"), "--print-dir"],
                             capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    helm = Path(out.stdout.strip()) / "helm"
    return helm if out.returncode == 0 and os.access(helm, os.X_OK) else None


def _chart() -> Path:
    out = subprocess.run(["bash", str(REPO / "hack" / "rasa-chart.sh"), "--print-dir"],
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def template() -> Any:
    helm, chart = _helm(), _chart()
    missing = [what for what, ok in (("helm (hack/build-kube.sh)", helm is not None),
                                     (f"Rasa's chart at {chart} (hack/rasa-chart.sh)",
                                      (chart / "Chart.yaml").is_file())) if not ok]  # fmt: skip
    if missing:
        pytest.fail("RASA CHART NOT RENDERED: missing " + ", ".join(missing)
                    + " (make test-rasa-charts fetches both)")

    def render(name: str) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [str(helm), "template", "rasa", str(chart), "--namespace", "bots",
             "-f", str(EXAMPLES / name)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    return render


def _bot(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["name"] == "rasa"]  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "rasa"]
    return pod, container


def test_the_current_chart_mounts_the_operators_endpoints_yml(template: Any) -> None:
    docs = template("rasa-pro-chart.yaml")
    pod, container = _bot(docs)
    assert container["command"] == ["turnstile-rasa"]
    assert container["args"][0] == "run"
    assert container["args"][-2:] == ["--endpoints", "/app/config/endpoints.yml"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "subPath" not in mounts["/app/config"]
    assert "/app/endpoints.yml" not in mounts  # the chart's own file is not mounted
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/app/config"]["name"]]["configMap"] == {"name": "bot-endpoints"}
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert set(configmap["data"]) == {"credentials"}  # no endpoints key for helm to rewrite
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TURNSTILE_REQUIRE_SECTIONS"] == "lock_store,timer_store"


def test_the_current_chart_serves_an_engine_project_from_integrations_yml(template: Any) -> None:
    docs = template("rasa-pro-chart-engine.yaml")
    pod, container = _bot(docs)
    assert container["command"] == ["turnstile-rasa"]
    assert "--endpoints" not in container["args"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/app/integrations.yml"]["subPath"] == "integrations.yml"
    assert "/app/endpoints.yml" not in mounts and "/app/credentials.yml" not in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    name = mounts["/app/integrations.yml"]["name"]
    assert volumes[name]["configMap"] == {"name": "bot-integrations"}
    assert not [d for d in docs if d["kind"] == "ConfigMap"]  # the chart renders none
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TURNSTILE_STORES_FILE"] == "integrations"
    assert env["RASA_PROJECT_FOLDER"] == "/app"


def test_the_composed_file_is_mounted_where_the_chart_mounts_its_own(template: Any) -> None:
    """``rasa-pro-chart-composed.yaml``: the operator's composed file at ``/app/endpoints.yml``
    by ``subPath``, and the node tier's chart-shaped bot (``tests/platform/rasa_chart_bot``,
    which proves the wiring with real pods) is the chart's Deployment in every part that
    matters to the wiring: mounts, volumes, env, args, the ``checksum/config`` annotation."""
    from tests.platform.images import Image  # noqa: PLC0415  (the node tier's, pure data here)
    from tests.platform.rasa_chart_bot import chart_deployment  # noqa: PLC0415

    docs = template("rasa-pro-chart-composed.yaml")
    pod, container = _bot(docs)
    assert container["command"] == ["turnstile-rasa"]
    assert "--endpoints" not in container["args"]  # Rasa's default, /app/endpoints.yml
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/app/endpoints.yml"]["subPath"] == "endpoints.yml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/app/endpoints.yml"]["name"]]["configMap"] == {"name": "bot-endpoints"}
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert set(configmap["data"]) == {"credentials"}

    tier = chart_deployment(Image("docker.io/library/bot:t", Path("/dev/null")), "bot-endpoints")
    tier_pod = tier["spec"]["template"]["spec"]
    (tier_container,) = tier_pod["containers"]
    model = {"/app/bot-model"}  # the tier's model volume (the chart downloads one instead)

    def mounted(c: dict[str, Any]) -> set[tuple[str, str | None, str]]:
        return {(m["mountPath"], m.get("subPath"), m["name"]) for m in c["volumeMounts"]
                if m["mountPath"] not in model}  # fmt: skip

    assert mounted(tier_container) == mounted(container)
    chart_volumes = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pod["volumes"]}
    tier_volumes = {v["name"]: {k: x for k, x in v.items() if k != "name"}
                    for v in tier_pod["volumes"] if v["name"] != "bot-model"}  # fmt: skip
    assert tier_volumes == chart_volumes
    chart_env = [e["name"] for e in container["env"]]
    tier_env = [e["name"] for e in tier_container["env"]]
    assert tier_env == chart_env[: len(tier_env)]  # then the values' additionalEnv
    assert tier_container["args"][:6] == container["args"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["name"] == "rasa"]  # fmt: skip
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert set(tier["spec"]["template"]["metadata"]["annotations"]) == set(annotations)
    assert tier["spec"]["selector"] == deployment["spec"]["selector"]
