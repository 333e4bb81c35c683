"""Bot-pod metrics on real Redis: each series moves as ``docs/metrics.md`` says.

Scripted scenarios: two holders on one conversation (waits, positions, holds), a holder that
outlives a short ``lock_lifetime`` (overtaken), a Redis restart under lock cycles (retries),
a timer store running from memory while Redis is down (the fallback gauges), a timer manager
firing due timers (claims, firings, lag), and one scrape of the HTTP exposition on 127.0.0.1.
Values are read from a private registry (the ``registry`` fixture).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.platform.redis_servers import RedisServer, SentinelGroup, free_port, store_kwargs
from tests.redis.test_locks import MODES, kwargs_for, wait_for_tickets
from tests.unit.test_metrics import registry, value
from turnstile.stores import metrics
from turnstile.stores.config import RedisSettings
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.probe import probe
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.redis import RedisTimerStore

__all__ = ["registry"]  # the fixture, shared with the unit tests

StoreFactory = Callable[..., RedisTicketLockStore]


@pytest.fixture(params=MODES)
async def make_store(
    request: pytest.FixtureRequest, registry: CollectorRegistry
) -> AsyncIterator[tuple[str, StoreFactory]]:
    fixture = {"standard": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[request.param]
    topology = request.getfixturevalue(fixture)
    stores: list[RedisTicketLockStore] = []

    def make(**extra: Any) -> RedisTicketLockStore:
        store = RedisTicketLockStore.from_kwargs(kwargs_for(topology, **extra))
        stores.append(store)
        return store

    yield request.param, make
    for store in stores:
        await store.close()


def conversation() -> str:
    return f"metrics-{uuid.uuid4().hex[:12]}"


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_a_waiter_on_another_pod_shows_wait_hold_and_queue_position(
    make_store: tuple[str, StoreFactory], registry: CollectorRegistry
) -> None:
    mode, make = make_store
    pods = [make(), make()]
    cid = conversation()
    release = asyncio.Event()

    async def holder() -> None:
        async with pods[0].lock(cid, lock_lifetime=20):
            await release.wait()

    first = asyncio.create_task(holder())
    await wait_for_tickets(pods[0], cid, 1)
    second = asyncio.create_task(pods[1].lock(cid, lock_lifetime=20).__aenter__())
    await wait_for_tickets(pods[0], cid, 2)
    await asyncio.sleep(0.2)
    release.set()
    await asyncio.wait_for(first, 10)
    held = await asyncio.wait_for(second, 10)
    assert await pods[1]._release(cid, ticket_id=held.ticket_id, number=held.fencing_token)

    labels = {"store": "redis", "mode": mode}
    assert value(registry, "turnstile_lock_wait_seconds_count", **labels) == 2
    assert value(registry, "turnstile_lock_wait_seconds_sum", **labels) >= 0.2
    assert value(registry, "turnstile_lock_hold_seconds_count", **labels) == 1
    assert value(registry, "turnstile_lock_hold_seconds_sum", **labels) >= 0.2
    assert value(registry, "turnstile_lock_queue_position_count", **labels) == 2
    assert value(registry, "turnstile_lock_queue_position_bucket", le="0.0", **labels) == 1
    assert value(registry, "turnstile_lock_queue_position_sum", **labels) == 1
    assert value(registry, "turnstile_lock_overtaken_total", **labels) == 0


async def test_a_holder_outliving_a_short_lifetime_is_counted_overtaken(
    redis_server: RedisServer, registry: CollectorRegistry
) -> None:
    pods = [RedisTicketLockStore.from_kwargs(kwargs_for(redis_server)) for _ in range(2)]
    cid = conversation()
    try:
        async def slow() -> None:
            async with pods[0].lock(cid, lock_lifetime=0.3):
                await asyncio.sleep(0.8)

        task = asyncio.create_task(slow())
        await wait_for_tickets(pods[0], cid, 1)
        async with pods[1].lock(cid, lock_lifetime=20):
            pass  # let in once the slow holder's ticket expired
        await asyncio.wait_for(task, 10)
    finally:
        for pod in pods:
            await pod.close()
    labels = {"store": "redis", "mode": "standard"}
    assert value(registry, "turnstile_lock_overtaken_total", **labels) == 1
    assert value(registry, "turnstile_lock_hold_seconds_count", **labels) == 2


async def test_a_redis_restart_under_lock_cycles_counts_retries(
    fresh_redis_server: RedisServer, registry: CollectorRegistry
) -> None:
    store = RedisTicketLockStore.from_kwargs(kwargs_for(fresh_redis_server))
    labels = {"mode": "standard", "client": "turnstile-locks"}
    stop = asyncio.Event()
    cycles = 0

    async def loop() -> None:
        nonlocal cycles
        for _ in range(100_000):  # bounded; stopped long before
            if stop.is_set():
                return
            async with store.lock(conversation(), lock_lifetime=10):
                cycles += 1
            await asyncio.sleep(0.005)

    running = asyncio.create_task(loop())
    try:
        assert await wait_until(lambda: cycles > 5, timeout=10)
        assert value(registry, "turnstile_redis_retries_total", **labels) == 0
        fresh_redis_server.terminate()
        await asyncio.sleep(0.5)
        fresh_redis_server.proc = None
        fresh_redis_server.start()
        before = cycles
        assert await wait_until(lambda: cycles > before + 5, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)  # a failed cycle raises here
        await store.close()
    assert value(registry, "turnstile_redis_retries_total", **labels) >= 1


async def test_a_timer_store_running_from_memory_shows_in_the_fallback_gauges(
    fresh_redis_server: RedisServer, registry: CollectorRegistry
) -> None:
    kwargs = store_kwargs(fresh_redis_server, db=0, fallback_after=0.2)
    store = RedisTimerStore.from_kwargs(kwargs, retry_interval=0.2)
    active = lambda: value(registry, "turnstile_timer_fallback_active", mode="standard")  # noqa: E731
    try:
        await store.store_timer("before", "s", time.time() + 3600)
        assert active() == 0
        fresh_redis_server.terminate()
        await store.store_timer("during", "s", time.time() + 3600)
        assert store.using_fallback
        assert active() == 1
        assert value(registry, "turnstile_timer_fallback_pending", mode="standard") == 1
        fresh_redis_server.proc = None
        fresh_redis_server.start()
        assert await wait_until(lambda: active() == 0, timeout=15)
        assert value(registry, "turnstile_timer_fallback_pending", mode="standard") == 0
    finally:
        await store.aclose()


async def test_the_timer_manager_counts_claims_firings_and_lag_on_redis(
    redis_server: RedisServer, registry: CollectorRegistry
) -> None:
    prefix = f"metrics{uuid.uuid4().hex[:8]}"
    store = RedisTimerStore.from_kwargs(store_kwargs(redis_server, db=0, key_prefix=prefix))
    fired: list[str] = []

    async def on_expired(timer: SessionTimer) -> None:
        fired.append(timer.sender_id)

    try:
        now = time.time()
        for i in range(5):
            await store.store_timer(f"t{i}", "s", now - 0.5)
        async with TimerManager(store, on_expired, poll_interval=0.05):
            assert await wait_until(lambda: len(fired) == 5, timeout=10)
    finally:
        await store.aclose()
    labels = {"store": "redis"}
    assert value(registry, "turnstile_timers_claimed_total", **labels) == 5
    assert value(registry, "turnstile_timers_fired_total", **labels) == 5
    assert value(registry, "turnstile_timer_fire_lag_seconds_count", **labels) == 5
    assert value(registry, "turnstile_timer_fire_lag_seconds_sum", **labels) >= 5 * 0.5


async def test_the_metrics_port_serves_the_series_on_loopback(redis_server: RedisServer) -> None:
    metrics.reset()
    port = free_port()
    try:
        assert metrics.configure(
            "prometheus", registry=CollectorRegistry(), port=port, addr="127.0.0.1", environ={}
        )
        store = RedisTicketLockStore.from_kwargs(kwargs_for(redis_server))
        try:
            async with store.lock(conversation()):
                pass
        finally:
            await store.close()

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        text = await asyncio.to_thread(scrape)
    finally:
        metrics.reset()
    assert 'turnstile_lock_wait_seconds_count{mode="standard",store="redis"} 1.0' in text
    assert 'turnstile_lock_overtaken_total{mode="standard",store="redis"} 0.0' in text


async def test_the_probe_lock_cycle_is_not_counted_as_a_bot_message(
    redis_server: RedisServer, registry: CollectorRegistry
) -> None:
    settings = RedisSettings(host=redis_server.host, port=redis_server.port)
    report = await probe(settings, store="lock_store")
    assert report.ok, report
    labels = {"store": "redis", "mode": "standard"}
    assert value(registry, "turnstile_lock_wait_seconds_count", **labels) == 0
    assert value(registry, "turnstile_lock_queue_position_count", **labels) == 0


@pytest.mark.slow
@pytest.mark.asyncio_only  # one loop is enough to see the counters; a failover takes seconds
async def test_a_sentinel_failover_counts_retries_and_a_reconnect(
    fresh_redis_sentinel: SentinelGroup, registry: CollectorRegistry
) -> None:
    group = fresh_redis_sentinel
    store = RedisTicketLockStore.from_kwargs(kwargs_for(group))
    labels = {"mode": "sentinel", "client": "turnstile-locks"}
    stop = asyncio.Event()
    cycles = 0

    async def loop() -> None:
        nonlocal cycles
        for _ in range(100_000):  # bounded; stopped long before
            if stop.is_set():
                return
            async with store.lock(conversation(), lock_lifetime=10):
                cycles += 1
            await asyncio.sleep(0.005)

    running = asyncio.create_task(loop())
    try:
        assert await wait_until(lambda: cycles > 5, timeout=10)
        old = group.kill_master()
        await asyncio.to_thread(group.wait_for_failover, old, 30.0)
        before = cycles
        assert await wait_until(lambda: cycles > before + 5, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)  # a failed cycle raises here
        await store.close()
    assert value(registry, "turnstile_redis_retries_total", **labels) >= 1
    assert value(registry, "turnstile_redis_reconnects_total", **labels) >= 1
