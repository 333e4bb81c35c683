"""The operator's own settings, read once from the environment.

kopf registers handlers when :mod:`turnstile.operator.handlers.stores` is imported, and a timer's
interval is fixed at registration; so the CLI (``turnstile operator --recheck-interval 10``)
writes these variables before importing the handlers, and a container may set them directly.

============================== ======= ===================================================
variable                       default meaning
============================== ======= ===================================================
TURNSTILE_RECHECK_INTERVAL     30      seconds between re-checks of every store (probe + render)
TURNSTILE_PROBE_TIMEOUT        5       seconds one Redis probe may take
TURNSTILE_METRICS_PORT         9090    port of the Prometheus ``/metrics`` endpoint (0: off)
TURNSTILE_WORKERS              16      stores reconciled at once (bounds Redis connections)
TURNSTILE_API_CONNECTIONS      64      HTTPS connections kopf may hold to the API server; watch
                                       streams hold one each, so the CLI raises it with the
                                       number of ``--namespace`` flags
TURNSTILE_REPORT_UNWATCHED     false   ``true``: give stores outside the watched namespaces the
                                       condition ``NamespaceNotWatched``
                                       (:mod:`turnstile.operator.handlers.unwatched`)
TURNSTILE_WATCHED_NAMESPACES   --      the namespaces (kopf globs, comma-separated) the
                                       operator was started with; reporting needs them and is
                                       off without them (the chart sets both)
============================== ======= ===================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from turnstile.operator.model.errors import SpecError

RECHECK_INTERVAL_ENV: Final = "TURNSTILE_RECHECK_INTERVAL"
PROBE_TIMEOUT_ENV: Final = "TURNSTILE_PROBE_TIMEOUT"
METRICS_PORT_ENV: Final = "TURNSTILE_METRICS_PORT"
WORKERS_ENV: Final = "TURNSTILE_WORKERS"
API_CONNECTIONS_ENV: Final = "TURNSTILE_API_CONNECTIONS"
REPORT_UNWATCHED_ENV: Final = "TURNSTILE_REPORT_UNWATCHED"
WATCHED_NAMESPACES_ENV: Final = "TURNSTILE_WATCHED_NAMESPACES"


def _seconds(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(name, "a number of seconds", raw) from None
    if value < minimum:
        raise SpecError(name, f"a number of seconds >= {minimum:g}", raw)
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise SpecError(name, "a port from 0 (off) to 65535", raw)
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise SpecError(name, '"true" or "false"', raw)


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())


@dataclass(frozen=True)
class OperatorConfig:
    recheck_interval: float = 30.0
    probe_timeout: float = 5.0
    metrics_port: int = 9090
    workers: int = 16
    api_connections: int = 64
    report_unwatched: bool = False
    watched_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        return cls(
            recheck_interval=_seconds(env, RECHECK_INTERVAL_ENV, 30.0, 0.5),
            probe_timeout=_seconds(env, PROBE_TIMEOUT_ENV, 5.0, 0.1),
            metrics_port=_port(env, METRICS_PORT_ENV, 9090),
            workers=int(_seconds(env, WORKERS_ENV, 16, 1)),
            api_connections=int(_seconds(env, API_CONNECTIONS_ENV, 64, 16)),
            report_unwatched=_flag(env, REPORT_UNWATCHED_ENV),
            watched_namespaces=_names(env, WATCHED_NAMESPACES_ENV),
        )
