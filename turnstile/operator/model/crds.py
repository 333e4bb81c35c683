"""The LockStore and TimerStore CustomResourceDefinitions, generated from one source.

Both kinds share ``spec.redis`` (Rasa's keys in camelCase), ``spec.implementation``,
``spec.configMap`` and ``spec.rollout``; generating both CRDs here keeps those identical and
keeps the CEL rule messages equal to the ones :mod:`turnstile.operator.model.specs` raises. The YAML
in ``crds/`` is this module's output, checked by a unit test::

    python -m turnstile.operator.model.crds --write crds/     # regenerate both files
    python -m turnstile.operator.model.crds                   # print both (multi-document YAML)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from turnstile.operator.model import schema
from turnstile.operator.model.kinds import CATEGORY, GROUP, KINDS, LOCK_STORE, VERSION, KindInfo
from turnstile.operator.model.specs import (
    CONFIG_FORMATS,
    DEFAULT_PORT,
    DEFAULT_SENTINEL_SERVICE,
    DEPLOYMENT_MODES,
    FORMAT_KEYS,
    IMPLEMENTATIONS,
    RULES,
)
from turnstile.stores.fingerprint import STORES_FILE_ENV

_PORT: Final = (
    r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
ENDPOINT_PATTERN: Final = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):" + _PORT + "$"
DNS_SUBDOMAIN: Final = schema.DNS_SUBDOMAIN


def _cel_string(text: str) -> str:
    """``text`` escaped for a single-quoted CEL string literal (regex backslashes survive)."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _rule(rule: str, message_key: str, field_path: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule, "message": RULES[message_key]}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _floored(bounds: schema.Bounds, message_key: str) -> dict[str, Any]:
    """A number field with a fractional minimum, checked by CEL too: the API server compares a
    whole number with ``minimum: 0.1`` as if it were 0 (``socketTimeout: 0`` passed)."""
    return {
        **bounds.schema(),
        "x-kubernetes-validations": [
            _rule(f"double(self) >= {bounds.minimum!r}", message_key)
        ],
    }


def _secret_ref(what: str, default_key: str | None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "description": f"Name of the Secret (in the store's namespace) holding {what}.",
        },
    }
    required = ["name"]
    if default_key is not None:
        props["key"] = {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "default": default_key,
            "description": f"Key in the Secret (default {default_key!r}).",
        }
    return {"type": "object", "required": required, "properties": props}


def sentinel_schema() -> dict[str, Any]:
    """``spec.redis.sentinel``: the sentinels' own credentials and TLS (sentinel mode only)."""
    password = _secret_ref("the sentinels' password", "password")
    password["description"] = (
        "Secret key holding the sentinels' password (their requirepass), apart from the data "
        "nodes' passwordSecretRef. The rendered endpoints.yml holds "
        "${TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD} / ${TURNSTILE_TIMER_STORE_SENTINEL_PASSWORD} "
        "(see status.secretEnv)."
    )
    return {
        "type": "object",
        "description": (
            "Authentication and TLS to the sentinels themselves (sentinel mode only): "
            "sentinel_username, sentinel_password, sentinel_use_ssl."
        ),
        "properties": {
            "username": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "Sentinel ACL user name (needs passwordSecretRef).",
                "x-kubernetes-validations": [
                    _rule("!self.contains('${')", "sentinel_username_var")
                ],
            },
            "passwordSecretRef": password,
            "tls": {
                "type": "boolean",
                "description": (
                    "TLS to the sentinels, with the data nodes' certificates and verification "
                    "(needs tls.enabled; renders sentinel_use_ssl: true)."
                ),
            },
        },
        "x-kubernetes-validations": [
            _rule(
                "!has(self.username) || has(self.passwordSecretRef)",
                "sentinel_username_password",
                ".username",
            ),
        ],
    }


def redis_schema() -> dict[str, Any]:
    """``spec.redis``: identical for both kinds."""
    password = _secret_ref("the Redis password", "password")
    password["description"] = (
        "Secret key holding the Redis password. The rendered endpoints.yml never contains "
        "it: it holds ${TURNSTILE_LOCK_STORE_PASSWORD} / ${TURNSTILE_TIMER_STORE_PASSWORD}, "
        "which bot pods set from this Secret key (see status.secretEnv)."
    )
    ca = _secret_ref("the CA certificate(s) that sign the Redis servers' certificates", "ca.crt")
    ca["description"] = (
        "Secret key with the PEM CA bundle to verify Redis with (cert-manager writes it as "
        "'ca.crt'). Bots read it from /etc/turnstile/<section>/ca.crt."
    )
    client = _secret_ref("a client certificate", None)
    client["description"] = (
        "A kubernetes.io/tls Secret (keys 'tls.crt' and 'tls.key', as cert-manager writes a "
        "Certificate) for TLS client authentication. Bots read them from "
        "/etc/turnstile/<section>/tls.crt and tls.key."
    )
    return {
        "type": "object",
        "description": (
            "How bots reach Redis: Rasa's endpoints.yml keys in camelCase "
            "(deploymentMode -> deployment_mode, keyPrefix -> key_prefix, ...)."
        ),
        "properties": {
            "deploymentMode": {
                "type": "string",
                "enum": list(DEPLOYMENT_MODES),
                "default": "standard",
                "description": "standard (one server), cluster (Redis Cluster) or sentinel.",
            },
            "host": {
                "type": "string",
                "minLength": 1,
                "maxLength": 253,
                "description": (
                    "Redis host name or IP, without a scheme. Required in standard mode; in "
                    "cluster mode a seed node when endpoints is empty."
                ),
                "x-kubernetes-validations": [
                    _rule("!self.contains('://')", "host_scheme"),
                    _rule("!self.matches('\\\\s')", "host_space"),
                    _rule(
                        f"!self.contains(':') || self.matches('{_cel_string(schema.IPV6_HOST)}')",
                        "host_port",
                    ),
                ],
            },
            "port": {
                **schema.PORT.schema(),
                "default": DEFAULT_PORT,
                "description": f"Redis port (default {DEFAULT_PORT}).",
            },
            "endpoints": {
                "type": "array",
                "maxItems": 64,
                "description": (
                    'Cluster nodes or sentinels as "host:port" (cluster and sentinel modes).'
                ),
                "items": {
                    "type": "string",
                    "maxLength": 261,
                    "x-kubernetes-validations": [
                        _rule(f"self.matches('{_cel_string(ENDPOINT_PATTERN)}')", "endpoint")
                    ],
                },
            },
            "sentinelService": {
                "type": "string",
                "minLength": 1,
                "maxLength": 253,
                "description": (
                    f"Name of the master the sentinels monitor (sentinel mode; default "
                    f"{DEFAULT_SENTINEL_SERVICE!r})."
                ),
            },
            "db": {
                **schema.DB.schema(),
                "description": (
                    "Redis database number (standard and sentinel modes; Rasa's default when "
                    "unset). Cluster mode has only database 0."
                ),
            },
            "keyPrefix": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Alphanumeric prefix for the store's keys.",
                "x-kubernetes-validations": [
                    _rule(f"self.matches('{_cel_string(schema.KEY_PREFIX)}')", "key_prefix")
                ],
            },
            "socketTimeout": {
                **_floored(schema.SOCKET_TIMEOUT, "socket_timeout"),
                "description": "Seconds after which a Redis call fails (Rasa's default: 10).",
            },
            "failoverTimeout": {
                **schema.FAILOVER_TIMEOUT.schema(),
                "description": (
                    "Seconds a call keeps retrying through a failover before it fails (renders "
                    "failover_timeout; default 60). Needs implementation: turnstile."
                ),
            },
            "username": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "Redis ACL user name (needs passwordSecretRef).",
                "x-kubernetes-validations": [_rule("!self.contains('${')", "username_var")],
            },
            "passwordSecretRef": password,
            "sentinel": sentinel_schema(),
            "tls": {
                "type": "object",
                "description": "TLS to Redis; certificates come from Secrets.",
                "properties": {
                    "enabled": {
                        "type": "boolean",
                        "default": False,
                        "description": "Connect with TLS (renders use_ssl: true).",
                    },
                    "caSecretRef": ca,
                    "clientCertSecretRef": client,
                    "verify": {
                        "type": "boolean",
                        "description": (
                            "Verify the servers' certificates, against caSecretRef or else the "
                            "system trust store (default true). false renders "
                            "ssl_cert_reqs: none: anyone on the network path can impersonate "
                            "Redis; the operator posts a TLSVerificationOff Warning Event."
                        ),
                    },
                    "checkHostname": {
                        "type": "boolean",
                        "description": (
                            "Check that the certificate names the host connected to (default "
                            "true). false renders ssl_check_hostname: false."
                        ),
                    },
                },
                "x-kubernetes-validations": [
                    _rule(
                        "self.enabled || (!has(self.caSecretRef) && "
                        "!has(self.clientCertSecretRef))",
                        "tls_refs",
                    )
                ],
            },
        },
        "x-kubernetes-validations": [
            _rule(
                "self.deploymentMode == 'sentinel' || !has(self.sentinel)",
                "sentinel_auth",
                ".sentinel",
            ),
            _rule(
                "!has(self.sentinel) || !has(self.sentinel.tls) || !self.sentinel.tls || "
                "(has(self.tls) && self.tls.enabled)",
                "sentinel_tls",
                ".sentinel.tls",
            ),
            _rule(
                "self.deploymentMode != 'sentinel' || "
                "(has(self.endpoints) && size(self.endpoints) > 0)",
                "sentinel_endpoints",
                ".endpoints",
            ),
            _rule(
                "self.deploymentMode != 'cluster' || !has(self.db) || self.db == 0",
                "cluster_db",
                ".db",
            ),
            _rule(
                "self.deploymentMode != 'cluster' || has(self.host) || "
                "(has(self.endpoints) && size(self.endpoints) > 0)",
                "cluster_nodes",
                ".endpoints",
            ),
            _rule("self.deploymentMode != 'standard' || has(self.host)", "standard_host", ".host"),
            _rule(
                "self.deploymentMode != 'standard' || !has(self.endpoints) || "
                "size(self.endpoints) == 0",
                "standard_endpoints",
                ".endpoints",
            ),
            _rule(
                "self.deploymentMode == 'sentinel' || !has(self.sentinelService)",
                "sentinel_service",
                ".sentinelService",
            ),
            _rule(
                "!has(self.username) || has(self.passwordSecretRef)",
                "username_password",
                ".username",
            ),
        ],
    }


#: Most labels in ``matchLabels`` and values in one ``matchExpressions`` entry: bounds the
#: CEL rules' cost (the API server refuses a CRD whose rules could cost too much).
_SELECTOR_MAX: Final = 64
#: Most ``matchExpressions`` entries (the same reason).
_EXPRESSIONS_MAX: Final = 16


def _label_key_cel(var: str) -> str:
    """CEL that is true when ``var`` is a label key Kubernetes accepts (:data:`RULES`)."""
    return (
        f"{var}.matches('{_cel_string(schema.LABEL_KEY)}') && "
        f"(!{var}.contains('/') || {var}.indexOf('/') <= {schema.LABEL_PREFIX_MAX})"
    )


def _label_keys_rule() -> dict[str, Any]:
    """Every ``matchLabels`` key is a label key; the message names the first bad one."""
    bad = f"self.filter(k, size(k) > {schema.LABEL_KEY_MAX} || !({_label_key_cel('k')}))[0]"
    return {
        "rule": f"self.all(k, size(k) <= {schema.LABEL_KEY_MAX} && ({_label_key_cel('k')}))",
        "message": RULES["label_key"],
        "messageExpression": (
            f"'{_cel_string(RULES['label_key'])} (got \"' + (size({bad}) > 60 ? "
            f"{bad}.substring(0, 60) + '...' : {bad}) + '\")'"
        ),
    }


def _label_value() -> dict[str, Any]:
    return {
        "type": "string",
        "maxLength": schema.LABEL_VALUE_MAX,
        "x-kubernetes-validations": [
            _rule(f"self.matches('{_cel_string(schema.LABEL_VALUE)}')", "label_value")
        ],
    }


def rollout_schema() -> dict[str, Any]:
    """``spec.rollout``: which bot workloads load this store's ConfigMap (rollout work)."""
    return {
        "type": "object",
        "description": (
            "Bot workloads that load this store's ConfigMap; they are rolled when the rendered "
            "configuration (or a Secret it references) changes."
        ),
        "properties": {
            "workloads": {
                "type": "array",
                "maxItems": 64,
                "description": "Workloads named explicitly.",
                "items": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "properties": {
                        "kind": {
                            "type": "string",
                            "enum": ["Deployment", "StatefulSet"],
                            "description": "Deployment or StatefulSet.",
                        },
                        "name": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 253,
                            "description": "Name of the workload in the store's namespace.",
                        },
                    },
                },
            },
            "selector": {
                "type": "object",
                "description": "Workloads selected by label (a standard label selector).",
                "properties": {
                    "matchLabels": {
                        "type": "object",
                        "maxProperties": _SELECTOR_MAX,
                        "additionalProperties": _label_value(),
                        "description": "Labels a workload must have.",
                        "x-kubernetes-validations": [_label_keys_rule()],
                    },
                    "matchExpressions": {
                        "type": "array",
                        "maxItems": _EXPRESSIONS_MAX,
                        "description": "Label selector requirements.",
                        "items": {
                            "type": "object",
                            "required": ["key", "operator"],
                            "x-kubernetes-validations": [
                                _rule(
                                    "self.operator in ['Exists', 'DoesNotExist'] || "
                                    "(has(self.values) && size(self.values) > 0)",
                                    "selector_values",
                                    ".values",
                                ),
                                _rule(
                                    "!(self.operator in ['Exists', 'DoesNotExist']) || "
                                    "!has(self.values) || size(self.values) == 0",
                                    "selector_no_values",
                                    ".values",
                                ),
                            ],
                            "properties": {
                                "key": {
                                    "type": "string",
                                    "maxLength": schema.LABEL_KEY_MAX,
                                    "description": "Label key (non-empty).",
                                    "x-kubernetes-validations": [
                                        _rule("size(self) > 0", "selector_key"),
                                        _rule(
                                            f"size(self) == 0 || ({_label_key_cel('self')})",
                                            "label_key",
                                        ),
                                    ],
                                },
                                "operator": {
                                    "type": "string",
                                    "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                                    "description": "In, NotIn, Exists or DoesNotExist.",
                                },
                                "values": {
                                    "type": "array",
                                    "maxItems": _SELECTOR_MAX,
                                    "items": _label_value(),
                                    "description": "Values for In and NotIn.",
                                },
                            },
                        },
                    },
                },
            },
            "injectEnv": {
                "type": "boolean",
                "default": False,
                "description": (
                    "Also add the env vars the rendered ${VAR}s need (status.secretEnv) to the "
                    "workloads' containers."
                ),
            },
        },
    }


def _kind_field(info: KindInfo) -> dict[str, Any]:
    """The one spec field of each kind: ``lockLifetime`` or ``pollInterval``."""
    if info is LOCK_STORE:
        lifetime = {
            **schema.LOCK_LIFETIME.schema(),
            "description": (
                "Seconds a conversation's ticket lock lives (renders lock_store.lock_lifetime; "
                "with implementation: rasa it is the TICKET_LOCK_LIFETIME env var, see "
                "status.env)."
            ),
        }
        transition = {
            "type": "object",
            "description": (
                "A change of where locks live (host, port, endpoints, sentinelService, db, "
                "keyPrefix, deploymentMode, implementation) renders the previous lock_store "
                "section as transition_from, with transition_until = now + durationSeconds, "
                "so old and new pods exclude each other during the rollout (see "
                "status.transition)."
            ),
            "properties": {
                "durationSeconds": {
                    **schema.TRANSITION_DURATION.schema(),
                    "default": schema.TRANSITION_DURATION_DEFAULT,
                    "description": (
                        "Seconds new pods also lock with the previous settings: the longest "
                        "your bots' rollout takes (default "
                        f"{schema.TRANSITION_DURATION_DEFAULT}, a Deployment's default "
                        "progressDeadlineSeconds); 0 switches at once."
                    ),
                },
            },
        }
        durable = {
            **schema.DURABLE_REPLICAS.schema(),
            "description": (
                "Durable mode (renders lock_store.lock_durable_replicas): the ticket that "
                "grants a conversation's turn is acknowledged by at least this many replicas "
                "(Redis WAIT) before the message is handled, narrowing the window in which a "
                "failover can lose it and let a second message in. One more round trip per "
                "turn; 0 or unset is off. Needs implementation: turnstile (docs/locks.md, "
                "\"Durable mode\")."
            ),
        }
        return {"lockLifetime": lifetime, "transition": transition, "durableReplicas": durable}
    interval = {
        **_floored(schema.POLL_INTERVAL, "poll_interval"),
        "description": "Seconds between polls for expired timers (renders poll_interval).",
    }
    return {"pollInterval": interval}


def _spec_rules(info: KindInfo) -> dict[str, Any]:
    """The rules across spec fields: durable mode (LockStore) and the failover budget are
    Turnstile's."""
    rules = [
        _rule(
            "!has(self.redis.failoverTimeout) || "
            "!has(self.implementation) || self.implementation != 'rasa'",
            "failover_rasa",
            ".redis.failoverTimeout",
        )
    ]
    if info is LOCK_STORE:
        rules.append(
            _rule(
                "!has(self.durableReplicas) || self.durableReplicas == 0 || "
                "!has(self.implementation) || self.implementation != 'rasa'",
                "durable_rasa",
                ".durableReplicas",
            )
        )
    return {"x-kubernetes-validations": rules}


def _transition_column(info: KindInfo) -> list[dict[str, Any]]:
    if info is not LOCK_STORE:
        return []
    return [{"name": "TransitionUntil", "type": "string", "jsonPath": ".status.transition.until"}]


def status_schema() -> dict[str, Any]:
    conditions = {
        "type": "array",
        "description": "Ready (Connected and ConfigRendered), Connected, ConfigRendered.",
        "items": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": {"type": "string"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": {"type": "string"},
                "message": {"type": "string"},
                "observedGeneration": {"type": "integer"},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
            },
        },
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    }
    secret_item = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "path": {"type": "string"},
            "secretName": {"type": "string"},
            "secretKey": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "description": "What the operator observed (written by the operator only).",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {"type": "integer"},
            "conditions": conditions,
            "mode": {"type": "string", "description": "Deployment mode last probed."},
            "master": {
                "type": "string",
                "description": "Master (host:port) at the last successful probe.",
            },
            "nodes": {
                "type": "integer",
                "description": "Healthy Redis nodes at the last successful probe.",
            },
            "sentinels": {"type": "integer", "description": "Sentinels that answered."},
            "latencyMs": {"type": "number", "description": "Duration of the last probe."},
            "tlsWarning": {
                "type": "string",
                "description": (
                    "Set while TLS does not fully verify Redis (tls.verify or "
                    "tls.checkHostname false); a Warning Event is posted when it appears."
                ),
            },
            "transition": {
                "type": "object",
                "description": (
                    "LockStore: set while the rendered section carries transition_from (the "
                    "lock-affecting settings of the pods being replaced) until 'until'; "
                    "'pending' while a further change waits for it to end."
                ),
                "properties": {
                    "from": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "until": {"type": "string", "format": "date-time"},
                    "pending": {"type": "boolean"},
                    "warning": {"type": "string"},
                    "secretEnv": {
                        "type": "array",
                        "description": (
                            "Env vars transition_from names for the previous Secrets "
                            "(TURNSTILE_LOCK_PREVIOUS_PASSWORD...), and where each comes from."
                        ),
                        "items": secret_item,
                    },
                },
            },
            "configMap": {
                "type": "object",
                "description": "Where the store's section is rendered.",
                "properties": {
                    "name": {"type": "string"},
                    "key": {"type": "string"},
                    "format": {"type": "string"},
                    "section": {"type": "string"},
                    "owned": {
                        "type": "boolean",
                        "description": "Created by Turnstile (garbage-collected with its stores).",
                    },
                    "base": {
                        "type": "object",
                        "description": "The ConfigMap key the file is composed from, if any.",
                        "properties": {
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                },
            },
            "secretEnv": {
                "type": "array",
                "description": "Env vars bot pods must set, and the Secret key each comes from.",
                "items": secret_item,
            },
            "secretFiles": {
                "type": "array",
                "description": "Files bot pods must mount, and the Secret key each comes from.",
                "items": secret_item,
            },
            "env": {
                "type": "array",
                "description": "Plain env vars bot pods must set (no endpoints.yml key exists).",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                },
            },
        },
    }


def _base_schema() -> dict[str, Any]:
    """``spec.configMap.base``: where the user's own sections come from (docs/rasa-charts.md)."""
    return {
        "type": "object",
        "required": ["name"],
        "description": (
            "Compose the file from a base: the text of this ConfigMap key (the user's own "
            "sections: tracker store, event broker, models, ...) with every store's section "
            "merged in. The ConfigMap named in configMap is then the operator's alone; a change "
            "of the base rewrites it and rolls the bots once."
        ),
        "properties": {
            "name": {
                "type": "string",
                "maxLength": schema.NAME_MAX,
                "pattern": DNS_SUBDOMAIN,
                "description": "ConfigMap name in the store's namespace (not configMap.name).",
            },
            "key": {
                "type": "string",
                "maxLength": schema.NAME_MAX,
                "pattern": schema.CONFIGMAP_KEY,
                "description": "Key of the base text (default: configMap.key).",
                "x-kubernetes-validations": [
                    _rule("self != '.' && self != '..'", "configmap_base_key")
                ],
            },
        },
    }


def crd(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_props: dict[str, Any] = {
        "redis": redis_schema(),
        "implementation": {
            "type": "string",
            "enum": list(IMPLEMENTATIONS),
            "default": "turnstile",
            "description": (
                f"turnstile: bots load {info.turnstile_type}; rasa: Rasa's built-in "
                f"'{info.rasa_type}' {info.section.replace('_', ' ')}."
            ),
        },
        "configMap": {
            "type": "object",
            "required": ["name"],
            "description": (
                f"The ConfigMap whose endpoints.yml (or integrations.yml) gets this store's "
                f"'{info.section}' section (other sections are kept). Created and owned by the "
                "operator unless it exists."
            ),
            "x-kubernetes-validations": [
                {
                    **_rule(
                        "!has(self.key) || !("
                        "(self.key == 'integrations.yml' && self.format != 'integrations') || "
                        "(self.key == 'endpoints.yml' && self.format != 'endpoints'))",
                        "configmap_format",
                        ".key",
                    ),
                    # the same sentence with the values at fault, as the operator words it
                    "messageExpression": f"'{_cel_string(RULES['configmap_format'])} (got key "
                    "' + self.key + ' with format ' + self.format + ')'",
                },
                {
                    **_rule("!has(self.base) || self.base.name != self.name",
                            "configmap_base", ".base.name"),
                    "messageExpression": f"'{_cel_string(RULES['configmap_base'])} (got "
                    "' + self.name + ' for both)'",
                },
            ],
            "properties": {
                "name": {
                    "type": "string",
                    "maxLength": schema.NAME_MAX,
                    "pattern": DNS_SUBDOMAIN,
                    "description": "ConfigMap name in the store's namespace.",
                },
                "format": {
                    "type": "string",
                    "enum": list(CONFIG_FORMATS),
                    "default": "endpoints",
                    "description": (
                        "The file Rasa reads the section from: endpoints (the --endpoints file, "
                        "every Rasa) or integrations (integrations.yml of a Rasa Pro engine "
                        "project, authoritative there). Sets the default key, and with "
                        "rollout.injectEnv tells turnstile-rasa which file to check "
                        f"({STORES_FILE_ENV})."
                    ),
                },
                "key": {
                    "type": "string",
                    "maxLength": schema.NAME_MAX,
                    "pattern": schema.CONFIGMAP_KEY,
                    "description": (
                        f"Key of the file (default {FORMAT_KEYS['endpoints']}, or "
                        f"{FORMAT_KEYS['integrations']} with format integrations)."
                    ),
                    "x-kubernetes-validations": [
                        _rule("self != '.' && self != '..'", "configmap_key")
                    ],
                },
                "base": _base_schema(),
            },
        },
        **_kind_field(info),
        "rollout": rollout_schema(),
    }
    ready = '.status.conditions[?(@.type=="Ready")]'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "turnstile"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": [info.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string",
                         "jsonPath": ".spec.redis.deploymentMode"},
                        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
                        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason"},
                        {"name": "Master", "type": "string", "jsonPath": ".status.master",
                         "priority": 1},
                        {"name": "ConfigMap", "type": "string",
                         "jsonPath": ".spec.configMap.name", "priority": 1},
                        *_transition_column(info),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                f"A {info.kind}: the Redis {info.section.replace('_', ' ')} "
                                "bots share, checked by the Turnstile operator and rendered "
                                f"into their endpoints.yml as '{info.section}'."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {
                                    "type": "object",
                                    "required": ["redis"],
                                    "description": f"The desired {info.kind}.",
                                    "properties": spec_props,
                                    **_spec_rules(info),
                                },
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def file_name(info: KindInfo) -> str:
    return f"{GROUP}_{info.plural}.yaml"


def render_crd(info: KindInfo) -> str:
    header = (
        "# Generated by `python -m turnstile.operator.model.crds --write crds/`; do not edit.\n"
    )
    return header + yaml.safe_dump(crd(info), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m turnstile.operator.model.crds")
    parser.add_argument("--write", metavar="DIR", help="write one file per CRD into DIR")
    args = parser.parse_args(argv)
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for info in KINDS.values():
            (out / file_name(info)).write_text(render_crd(info))
        return 0
    sys.stdout.write("---\n".join(render_crd(info) for info in KINDS.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
