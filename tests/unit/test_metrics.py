"""Bot-pod metrics (``turnstile.stores.metrics``) on the in-memory stores: choice, series, cost.

Each test reads a private ``CollectorRegistry`` (the ``registry`` fixture, also used by
``tests/redis/test_metrics.py``), so the series start at zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from turnstile.stores import metrics
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.memory import InMemoryTimerStore

MEMORY = {"store": "memory", "mode": "none"}


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """Metrics on, into a private registry, for the stores a test makes."""
    metrics.reset()
    reg = CollectorRegistry()
    assert metrics.configure("prometheus", registry=reg, environ={})
    yield reg
    metrics.reset()


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


async def test_a_waiter_behind_a_holder_shows_its_wait_hold_and_position(
    registry: CollectorRegistry,
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
    assert value(registry, "turnstile_lock_wait_seconds_count", **MEMORY) == 2
    # The waiter waited about the holder's 0.2 s; the holder held as long.
    assert value(registry, "turnstile_lock_wait_seconds_sum", **MEMORY) >= 0.15
    assert value(registry, "turnstile_lock_hold_seconds_sum", **MEMORY) >= 0.15
    assert value(registry, "turnstile_lock_queue_position_count", **MEMORY) == 2
    assert value(registry, "turnstile_lock_queue_position_bucket", le="0.0", **MEMORY) == 1
    assert value(registry, "turnstile_lock_queue_position_sum", **MEMORY) == 1
    assert value(registry, "turnstile_lock_overtaken_total", **MEMORY) == 0


async def test_a_holder_outliving_its_lifetime_counts_as_overtaken(
    registry: CollectorRegistry,
) -> None:
    store = InMemoryTicketLockStore()
    async with store.lock("c2", lock_lifetime=0.05):
        await asyncio.sleep(0.1)
    assert value(registry, "turnstile_lock_overtaken_total", **MEMORY) == 1


async def test_the_timer_manager_counts_claims_firings_drops_and_lag(
    registry: CollectorRegistry,
) -> None:
    store = InMemoryTimerStore()
    now = time.time()
    await store.store_timer("fire", "s1", now - 2.0)
    await store.store_timer("drop", "old-session", now - 1.0)

    async def on_expired(timer: SessionTimer) -> None:
        pass

    async def current_session(sender_id: str) -> str:
        return "s1" if sender_id == "fire" else "new-session"

    manager = TimerManager(store, on_expired, current_session=current_session)
    await manager.poll_once()
    labels = {"store": "memory"}
    assert value(registry, "turnstile_timers_claimed_total", **labels) == 2
    assert value(registry, "turnstile_timers_fired_total", **labels) == 1
    assert value(registry, "turnstile_timers_dropped_total", **labels) == 1
    assert value(registry, "turnstile_timer_fire_lag_seconds_count", **labels) == 1
    assert value(registry, "turnstile_timer_fire_lag_seconds_sum", **labels) >= 2.0


async def test_metrics_off_gives_stores_the_no_op_recorder() -> None:
    metrics.reset()
    try:
        assert not metrics.configure("off", environ={})
        store = InMemoryTicketLockStore()
        assert store.metrics is metrics.OFF
        async with store.lock("c3"):
            pass
    finally:
        metrics.reset()


def test_the_environment_chooses_and_bad_values_name_the_variable() -> None:
    metrics.reset()
    try:
        assert not metrics.configure(environ={"TURNSTILE_METRICS": "off"})
        with pytest.raises(ConfigurationError, match=r"TURNSTILE_METRICS.*auto"):
            metrics.configure(environ={"TURNSTILE_METRICS": "statsd"})
        with pytest.raises(ConfigurationError, match=r"TURNSTILE_METRICS_PORT.*1-65535"):
            metrics.configure(environ={"TURNSTILE_METRICS_PORT": "http"})
    finally:
        metrics.reset()


_WITHOUT_PROMETHEUS = """
import asyncio, sys
sys.modules["prometheus_client"] = None  # not installed, and no OpenTelemetry API either
sys.modules["opentelemetry"] = None
from turnstile.stores import metrics
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.memory import InMemoryTicketLockStore

async def main():
    store = InMemoryTicketLockStore()
    async with store.lock("c"):
        pass
    assert store.metrics is metrics.OFF
    metrics.reset()
    try:
        metrics.configure("prometheus", environ={})
    except ConfigurationError as exc:
        assert "rasa-turnstile[metrics]" in str(exc), exc
    else:
        raise AssertionError("prometheus without prometheus_client must fail")
    print("ok")

asyncio.run(main())
"""


def test_the_store_library_works_without_prometheus_client() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PROMETHEUS],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_bots_dashboard_charts_only_series_the_stores_export() -> None:
    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads(
        (root / "charts" / "turnstile-operator" / "files" / "bots-dashboard.json").read_text()
    )
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    charted = set(re.findall(r"\bturnstile_\w+", exprs))
    reg = CollectorRegistry()
    metrics._Series(reg)
    exported = {
        sample_name
        for family in reg.collect()
        for sample_name in (
            family.name, f"{family.name}_total", f"{family.name}_bucket",
            f"{family.name}_count", f"{family.name}_sum",
        )
    }
    assert charted <= exported, charted - exported
    bases = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in charted}
    assert bases == {family.name for family in reg.collect()}, "a series without a panel"


_FROM_THE_ENVIRONMENT = """
import asyncio, urllib.request
from turnstile.stores.locks.memory import InMemoryTicketLockStore

async def main():
    store = InMemoryTicketLockStore()  # the first store reads TURNSTILE_METRICS_PORT
    async with store.lock("c"):
        pass
    async with InMemoryTicketLockStore().lock("d"):  # a second store: no second server
        pass

asyncio.run(main())
with urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=5) as reply:
    print(reply.read().decode())
"""


def test_a_bot_process_serves_metrics_on_the_port_its_environment_names() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TURNSTILE_METRICS_PORT": str(port), "TURNSTILE_METRICS_ADDR": "127.0.0.1"}
    env.pop("TURNSTILE_METRICS", None)
    done = subprocess.run(
        [sys.executable, "-c", _FROM_THE_ENVIRONMENT.replace("{port}", str(port))],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert 'turnstile_lock_hold_seconds_count{mode="none",store="memory"} 2.0' in done.stdout
    assert "cannot serve" not in done.stderr


def test_a_bad_environment_fails_when_the_store_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics.reset()
    monkeypatch.setenv("TURNSTILE_METRICS", "statsd")
    try:
        with pytest.raises(ConfigurationError, match="TURNSTILE_METRICS"):
            InMemoryTicketLockStore()
    finally:
        metrics.reset()
