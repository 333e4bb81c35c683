"""Prometheus series of the operator, served on ``/metrics`` (``--metrics-port``).

=========================================== ========= =======================================
series                                      type      labels
=========================================== ========= =======================================
turnstile_reconciles_total                  counter   kind, result (ready, not_ready, invalid)
turnstile_reconcile_failures_total          counter   kind, reason (a condition reason)
turnstile_reconcile_duration_seconds        histogram kind
turnstile_probe_latency_seconds             histogram kind, mode (successful probes)
turnstile_stores                            gauge     kind (stores this operator handles)
turnstile_stores_ready                      gauge     kind (of those, Ready=True)
=========================================== ========= =======================================
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from turnstile.stores import metrics as store_metrics

RECONCILES: Final = Counter(
    "turnstile_reconciles_total", "Store reconciles, by outcome.", ["kind", "result"]
)
FAILURES: Final = Counter(
    "turnstile_reconcile_failures_total",
    "Reconciles that left a store not Ready, by condition reason.",
    ["kind", "reason"],
)
DURATION: Final = Histogram(
    "turnstile_reconcile_duration_seconds", "Time one reconcile took.", ["kind"]
)
PROBE_LATENCY: Final = Histogram(
    "turnstile_probe_latency_seconds",
    "Time a successful Redis probe took.",
    ["kind", "mode"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STORES: Final = Gauge("turnstile_stores", "Stores handled by this operator.", ["kind"])
READY_STORES: Final = Gauge("turnstile_stores_ready", "Stores whose Ready is True.", ["kind"])

_ready: dict[str, dict[str, bool]] = {}


def record_ready(kind: str, uid: str, ready: bool | None) -> None:
    """Remember whether a store is Ready (``None``: it is gone) and update the gauges."""
    stores = _ready.setdefault(kind, {})
    if ready is None:
        stores.pop(uid, None)
    else:
        stores[uid] = ready
    STORES.labels(kind=kind).set(len(stores))
    READY_STORES.labels(kind=kind).set(sum(stores.values()))


def serve(port: int) -> None:
    """Serve ``/metrics`` on ``port`` in a background thread (0: do nothing).

    The probe runs the store library in this process, and the library's bot metrics read the
    same ``TURNSTILE_METRICS_PORT``: they are turned off here, or the first probe would try to
    serve a second ``/metrics`` on the operator's port (and log that it cannot).
    """
    store_metrics.configure("off")
    if port:
        start_http_server(port)
