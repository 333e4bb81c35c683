"""Bot-pod metrics through the OpenTelemetry metrics API (``TURNSTILE_METRICS=otel``).

The SDK's in-memory reader stands where an application's exporter would; the stores only use
the API. The same scenarios as tests/unit/test_metrics.py, read back as OpenTelemetry data.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from turnstile.stores import metrics
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.memory import InMemoryTimerStore

pytestmark = pytest.mark.unit

MEMORY = {"store": "memory", "mode": "none"}


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """Metrics on through OpenTelemetry, into a private meter provider."""
    metrics.reset()
    read = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[read])
    assert metrics.configure("otel", meter_provider=provider, environ={})
    yield read
    metrics.reset()
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str, **attributes: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "turnstile.stores"
            for metric in scope.metrics:
                if metric.name == name:
                    found += [p for p in metric.data.data_points
                              if dict(p.attributes or {}) == attributes]
    return found


async def test_a_waiter_behind_a_holder_shows_its_wait_hold_and_position(
    reader: InMemoryMetricReader,
) -> None:
    store = InMemoryTicketLockStore()
    entered = asyncio.Event()

    async def holder() -> None:
        async with store.lock("c1", lock_lifetime=10):
            entered.set()
            await asyncio.sleep(0.2)

    first = asyncio.create_task(holder())
    await entered.wait()
    async with store.lock("c1", lock_lifetime=10):
        pass
    await first
    (wait,) = points(reader, "turnstile.lock.wait", **MEMORY)
    (hold,) = points(reader, "turnstile.lock.hold", **MEMORY)
    (position,) = points(reader, "turnstile.lock.queue_position", **MEMORY)
    assert wait.count == 2 and wait.sum >= 0.15
    assert hold.count == 2 and hold.sum >= 0.15
    assert position.count == 2 and position.sum == 1
    assert list(wait.explicit_bounds)[:2] == [0.0005, 0.001]  # the advised buckets
    assert points(reader, "turnstile.lock.overtaken", **MEMORY) == []


async def test_a_holder_outliving_its_lifetime_counts_as_overtaken(
    reader: InMemoryMetricReader,
) -> None:
    store = InMemoryTicketLockStore()
    async with store.lock("c2", lock_lifetime=0.05):
        await asyncio.sleep(0.1)
    (overtaken,) = points(reader, "turnstile.lock.overtaken", **MEMORY)
    assert overtaken.value == 1


async def test_the_timer_manager_counts_claims_firings_drops_and_lag(
    reader: InMemoryMetricReader,
) -> None:
    store = InMemoryTimerStore()
    now = time.time()
    await store.store_timer("fire", "s1", now - 2.0)
    await store.store_timer("drop", "old-session", now - 1.0)

    async def on_expired(timer: SessionTimer) -> None:
        pass

    async def current_session(sender_id: str) -> str:
        return "s1" if sender_id == "fire" else "new-session"

    await TimerManager(store, on_expired, current_session=current_session).poll_once()
    labels = {"store": "memory"}
    assert [p.value for p in points(reader, "turnstile.timers.claimed", **labels)] == [2]
    assert [p.value for p in points(reader, "turnstile.timers.fired", **labels)] == [1]
    assert [p.value for p in points(reader, "turnstile.timers.dropped", **labels)] == [1]
    (lag,) = points(reader, "turnstile.timer.fire_lag", **labels)
    assert lag.count == 1 and lag.sum >= 2.0


_AUTO_WITHOUT_PROMETHEUS = """
import asyncio, sys
sys.modules["prometheus_client"] = None  # not installed: auto takes OpenTelemetry's API
from opentelemetry import metrics as otel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
otel.set_meter_provider(MeterProvider(metric_readers=[reader]))  # as an application does
from turnstile.stores import metrics
from turnstile.stores.locks.memory import InMemoryTicketLockStore

async def main():
    store = InMemoryTicketLockStore()
    async with store.lock("c"):
        pass
    names = {m.name for r in reader.get_metrics_data().resource_metrics
             for s in r.scope_metrics for m in s.metrics}
    assert "turnstile.lock.wait" in names, names
    print("ok")

asyncio.run(main())
"""

_OTEL_WITHOUT_THE_API = """
import sys
sys.modules["opentelemetry"] = None  # not installed
from turnstile.stores import metrics
from turnstile.stores.errors import ConfigurationError
try:
    metrics.configure("otel", environ={})
except ConfigurationError as exc:
    assert "rasa-turnstile[otel]" in str(exc) and "TURNSTILE_METRICS" in str(exc), exc
    print("ok")
"""


@pytest.mark.parametrize("script", [_AUTO_WITHOUT_PROMETHEUS, _OTEL_WITHOUT_THE_API],
                         ids=["auto-takes-otel", "otel-needs-the-api"])
def test_the_choice_follows_what_is_installed(script: str) -> None:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok", done.stdout + done.stderr
