"""Durable mode (``lock_durable_replicas``) on real Redis, on both event loops.

Sentinel (master + 1 replica) and Cluster (one replica per master): every turn is acknowledged
by the replica (``WAIT``, counted on the master) and no warning is logged. Standalone has no
replica: the holder enters all the same, one warning says so, and acknowledgements pause for a
second instead of costing every turn the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup
from tests.redis.test_locks import conversation, kwargs_for
from turnstile.stores.locks.redis import RedisTicketLockStore, queue_key

CYCLES = 5


def _waits(node: RedisServer) -> int:
    stats = node.execute("INFO", "commandstats")
    text = stats.decode() if isinstance(stats, bytes) else str(stats)
    found = re.search(r"cmdstat_wait:calls=(\d+)", text)
    return int(found.group(1)) if found else 0


async def _cycles(store: RedisTicketLockStore, cid: str) -> list[int]:
    """CYCLES turns taken at the head, and one more through a waiter (CHECK's turn)."""
    tokens = []
    for _ in range(CYCLES):
        async with store.lock(cid) as held:
            tokens.append(held.fencing_token)
    release = asyncio.Event()

    async def hold() -> None:
        async with store.lock(cid) as held:
            tokens.append(held.fencing_token)
            await release.wait()

    async def wait() -> None:
        async with store.lock(cid) as held:
            tokens.append(held.fencing_token)

    holding = asyncio.create_task(hold())
    for _ in range(500):  # bounded: the holder is in
        if len(tokens) > CYCLES:
            break
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(wait())
    await asyncio.sleep(0.1)  # the waiter is queued (it cannot get in before the release)
    release.set()
    await asyncio.wait_for(asyncio.gather(holding, waiting), timeout=10)
    return tokens


async def _acknowledged(kwargs: dict[str, Any], master: RedisServer, cid: str,
                        caplog: pytest.LogCaptureFixture) -> None:
    store = RedisTicketLockStore.from_kwargs({**kwargs, "lock_durable_replicas": 1,
                                              "lock_durable_timeout": 2})
    assert store.durable is not None and store.durable.replicas == 1
    before = _waits(master)
    try:
        with caplog.at_level(logging.WARNING, logger="turnstile.stores.locks"):
            tokens = await _cycles(store, cid)
    finally:
        await store.close()
    assert tokens == sorted(tokens) and len(tokens) == CYCLES + 2
    assert _waits(master) - before >= CYCLES + 2  # one WAIT per turn, none skipped
    assert [r.getMessage() for r in caplog.records] == []


async def test_every_turn_is_acknowledged_by_the_sentinel_replica(
    redis_sentinel: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    await _acknowledged(kwargs_for(redis_sentinel), redis_sentinel.current_master_node(),
                        conversation(), caplog)


async def test_every_turn_is_acknowledged_by_the_cluster_replica(
    redis_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cid = conversation()
    await _acknowledged(kwargs_for(redis_cluster), redis_cluster.master_for_key(queue_key(cid)),
                        cid, caplog)


async def test_without_replicas_the_holder_enters_and_one_warning_says_so(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisTicketLockStore.from_kwargs({**kwargs_for(redis_server),
                                              "lock_durable_replicas": 1,
                                              "lock_durable_timeout": 0.05})
    before = _waits(redis_server)
    try:
        with caplog.at_level(logging.WARNING, logger="turnstile.stores.locks"):
            tokens = await _cycles(store, conversation())
    finally:
        await store.close()
    assert len(tokens) == CYCLES + 2
    warnings = [r.getMessage() for r in caplog.records]
    waits = _waits(redis_server) - before
    # Each WAIT fell short and paused the next ones for a second: fewer WAITs than turns (the
    # seven turns take a fraction of that pause; a very slow machine may see it end once).
    assert 1 <= waits < CYCLES + 2, waits
    assert len(warnings) == waits and "0 of 1 replicas" in warnings[0], warnings
