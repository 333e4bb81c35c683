"""A Rasa bot shaped as Rasa's current chart renders it, for the node tier.

``RasaHQ/rasa-helm-charts`` ``charts/rasa`` 2.4.0 (commit ``1eee5b44b92e``), rendered with
``helm template`` and the values of ``examples/rasa-charts/rasa-pro-chart-composed.yaml``,
gives the Deployment below; these manifests repeat what it renders (nothing of the chart is
copied). What differs, and why:

* the image is the tier's Rasa 3.6 bot image (``imagePullPolicy: Never``, no registry here);
* the model: the chart downloads one into its ``models`` emptyDir (``rasa.initialModel``), which
  needs the internet; here ``rasa.additionalArgs: [--model, ...]`` and one more volume hold the
  trained bot;
* the probes keep the chart's paths and ports with a shorter delay and period (``rasa.readiness
  Probe``/``livenessProbe`` values), so a rollout takes seconds, not the chart's 15 s steps;
* ``rasa.settings.telemetry.enabled: false`` (the chart's default is true: no traffic leaves
  the machine from this tier);
* the chart's ServiceAccount ``rasa`` is left out: the pods run as the namespace's default.

Everything that matters to the wiring is the chart's: ``checksum/config`` of the chart's own
ConfigMap on the pod template, the ConfigMap ``<fullname>-configmap`` with ``credentials``
mounted by ``subPath`` at ``/app/credentials.yml``, the emptyDir at ``/.config``, its env (the
Secret ``rasa-secrets`` for ``AUTH_TOKEN``, ``JWT_SECRET``, ``RASA_PRO_LICENSE``), its args
``run --enable-api --port 5005 --cors *`` (Rasa reads ``/app/endpoints.yml``, its working
directory's), and the file the operator composes mounted by ``subPath`` at
``/app/endpoints.yml`` through ``rasa.volumes``/``rasa.volumeMounts``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.platform.images import Image

NAME = "rasa"  # fullnameOverride
PORT = 5005
SELECTOR = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": NAME}
LABELS = "app.kubernetes.io/name=rasa,app.kubernetes.io/instance=rasa"
MODEL_DIR = "/app/bot-model"


def chart_configmap() -> dict[str, Any]:
    """``rasa-configmap`` as the chart renders it with ``settings.endpoints: {}``: credentials
    only (the endpoints key is empty, and not mounted)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-configmap", "labels": {"app.kubernetes.io/name": NAME}},
        "data": {"credentials": "rest: {}\n"},
    }


def chart_secret() -> dict[str, Any]:
    """``rasa-secrets``, which the chart's env reads (the user creates it for the chart)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rasa-secrets"},
        "stringData": {"authToken": "node-tier-token", "jwtSecret": "node-tier-jwt",
                       "rasaProLicense": "not-used-by-rasa-3.6"},
    }


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": "rasa-secrets", "key": key}}}


def chart_deployment(
    image: Image, composed: str, *, model_configmap: str = "bot-model",
    extra_env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The chart's Deployment (one replica, its default), mounting ConfigMap ``composed`` key
    ``endpoints.yml`` by ``subPath`` at ``/app/endpoints.yml``; ``extra_env``: the values'
    ``rasa.additionalEnv``."""
    checksum = hashlib.sha256(json.dumps(chart_configmap(), sort_keys=True).encode()).hexdigest()
    probe = {"httpGet": {"path": "/", "port": PORT, "scheme": "HTTP"}, "initialDelaySeconds": 3,
             "periodSeconds": 2, "timeoutSeconds": 5, "successThreshold": 1}  # fmt: skip
    container = {
        "name": "rasa",
        "securityContext": {},
        "image": image.name,
        "imagePullPolicy": "Never",
        "args": ["run", "--enable-api", "--port", str(PORT), "--cors", "*",
                 "--model", f"{MODEL_DIR}/bot.tar.gz"],
        "command": ["turnstile-rasa"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            _secret_env("AUTH_TOKEN", "authToken"),
            _secret_env("JWT_SECRET", "jwtSecret"),
            {"name": "JWT_METHOD", "value": "HS256"},
            _secret_env("RASA_PRO_LICENSE", "rasaProLicense"),
            {"name": "RASA_TELEMETRY_ENABLED", "value": "false"},
            {"name": "RASA_TELEMETRY_DEBUG", "value": "false"},
            {"name": "LOG_LEVEL", "value": "INFO"},
            {"name": "RASA_ENVIRONMENT", "value": "development"},
            *(extra_env or []),
        ],
        "livenessProbe": {**probe, "failureThreshold": 6, "initialDelaySeconds": 60},
        "readinessProbe": {**probe, "failureThreshold": 6},
        "resources": {},
        "volumeMounts": [
            {"name": "config-dir", "mountPath": "/.config"},
            {"mountPath": "/app/credentials.yml", "subPath": "credentials.yml",
             "name": "rasa-configuration", "readOnly": True},
            {"name": "models", "mountPath": "/app/models"},
            # rasa.volumeMounts: the file the operator composes, where the chart mounts its own
            {"mountPath": "/app/endpoints.yml", "name": "turnstile-endpoints",
             "readOnly": True, "subPath": "endpoints.yml"},
            {"mountPath": MODEL_DIR, "name": "bot-model", "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "labels": {**SELECTOR, "helm.sh/chart": "rasa-2.4.0",
                                              "app.kubernetes.io/managed-by": "Helm"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {
                "metadata": {"annotations": {"checksum/config": checksum},
                             "labels": dict(SELECTOR)},
                "spec": {
                    "hostNetwork": False,
                    "dnsPolicy": "ClusterFirst",
                    "securityContext": {},
                    "containers": [container],
                    "volumes": [
                        {"name": "config-dir", "emptyDir": {}},
                        {"name": "rasa-configuration", "configMap": {
                            "name": f"{NAME}-configmap",
                            "items": [{"key": "credentials", "path": "credentials.yml"}]}},
                        {"name": "models", "emptyDir": {}},
                        # rasa.volumes
                        {"name": "turnstile-endpoints", "configMap": {"name": composed}},
                        {"name": "bot-model", "configMap": {"name": model_configmap}},
                    ],
                },
            },
        },
    }  # fmt: skip


def chart_service() -> dict[str, Any]:
    """The chart's Service ``rasa`` (port 5005 to the pods' ``http``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME},
        "spec": {"selector": dict(SELECTOR),
                 "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
    }  # fmt: skip
