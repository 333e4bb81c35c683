"""A master killed with -9 (Sentinel or Cluster) is invisible to lock users.

Two stores (two "replicas") run lock cycles on a handful of conversations, two workers per
conversation so that waiting and wake-ups happen all the time; the master is killed mid-stream.
Every cycle must succeed, no two holders of one conversation may overlap, and cycles must go on
after the failover. A second test parks a waiter in its blocking wait across the failover and
checks that the holder's later release still wakes it.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from redis.crc import key_slot

from tests.platform.redis_servers import RedisCluster, SentinelGroup
from tests.redis.test_locks import kwargs_for, wait_for_tickets
from turnstile.stores.locks.redis import RedisTicketLockStore, queue_key

pytestmark = pytest.mark.slow

#: Ticket lifetime in the stream: long, so only wake-ups (not expiry) can hand a lock on.
LIFETIME = 30.0


class Stream:
    """Lock cycles on ``conversations`` by two workers each, until stopped; counts and checks."""

    def __init__(self, stores: list[RedisTicketLockStore], conversations: list[str]) -> None:
        self.stores = stores
        self.conversations = conversations
        self.cycles: Counter[str] = Counter()
        self.inside: Counter[str] = Counter()
        self.overlaps = 0
        self.stop = asyncio.Event()
        self.tokens: dict[str, list[int]] = {c: [] for c in conversations}

    async def _worker(self, store: RedisTicketLockStore, cid: str) -> None:
        for _ in range(100_000):  # bounded; stopped long before
            if self.stop.is_set():
                return
            async with store.lock(cid, lock_lifetime=LIFETIME) as held:
                self.inside[cid] += 1
                if self.inside[cid] > 1:
                    self.overlaps += 1
                self.tokens[cid].append(held.fencing_token)
                await asyncio.sleep(0.002)
                self.inside[cid] -= 1
            self.cycles[cid] += 1

    def start(self) -> asyncio.Future[list[None]]:
        return asyncio.gather(
            *(self._worker(store, cid) for cid in self.conversations for store in self.stores)
        )


async def run_through_failover(
    stores: list[RedisTicketLockStore],
    conversations: list[str],
    kill_and_wait: Callable[[], Awaitable[None]],
) -> Stream:
    stream = Stream(stores, conversations)
    running = stream.start()
    try:
        await asyncio.sleep(1.0)
        before = sum(stream.cycles.values())
        await kill_and_wait()
        after_failover = sum(stream.cycles.values())
        await asyncio.sleep(1.5)
        stream.stop.set()
        await asyncio.wait_for(running, timeout=60)  # any failed cycle raises here
    finally:
        stream.stop.set()
        if not running.done():
            running.cancel()
    assert before > 0
    assert sum(stream.cycles.values()) > after_failover  # cycles go on on the new master
    assert stream.overlaps == 0
    for cid, tokens in stream.tokens.items():
        assert len(tokens) == stream.cycles[cid]
        # Fencing tokens keep growing across the failover (the new master's clock is ahead).
        assert all(a < b for a, b in itertools.pairwise(tokens)), cid
    return stream


def _stores(kwargs: dict[str, object]) -> list[RedisTicketLockStore]:
    return [RedisTicketLockStore.from_kwargs(kwargs) for _ in range(2)]


async def test_sentinel_master_killed_during_lock_cycles(
    fresh_redis_sentinel: SentinelGroup,
) -> None:
    group = fresh_redis_sentinel
    stores = _stores(kwargs_for(group))
    conversations = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(4)]

    async def kill_and_wait() -> None:
        old = group.kill_master()
        await asyncio.to_thread(group.wait_for_failover, old, 30.0)

    try:
        await run_through_failover(stores, conversations, kill_and_wait)
    finally:
        for store in stores:
            await store.close()


# uvloop's loop.close() did not return after a test that killed a Cluster master (CI, beyond
# any timeout): asyncio only until that is understood (see test_connection.py).
@pytest.mark.asyncio_only
async def test_cluster_master_killed_during_lock_cycles(fresh_redis_cluster: RedisCluster) -> None:
    cluster = fresh_redis_cluster
    stores = _stores(kwargs_for(cluster))
    conversations = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    victim = queue_key(conversations[0])

    async def kill_and_wait() -> None:
        old = cluster.kill_master_for_key(victim)
        await asyncio.to_thread(cluster.wait_for_failover, old, key=victim, timeout=30.0)

    try:
        await run_through_failover(stores, conversations, kill_and_wait)
    finally:
        for store in stores:
            await store.close()


async def _waiter_across_failover(
    stores: list[RedisTicketLockStore], cid: str, kill_and_wait: Callable[[], Awaitable[None]]
) -> float:
    holder_store, waiter_store = stores
    release = asyncio.Event()

    async def holder() -> float:
        async with holder_store.lock(cid, lock_lifetime=LIFETIME):
            await release.wait()
            released_at = time.monotonic()
        return released_at

    holding = asyncio.create_task(holder())
    await wait_for_tickets(holder_store, cid, 1)
    waiting = asyncio.create_task(_acquire_time(waiter_store, cid))
    await wait_for_tickets(holder_store, cid, 2)
    await asyncio.sleep(0.3)  # the waiter is parked in BLPOP; the tickets are replicated
    await kill_and_wait()
    assert not waiting.done()
    release.set()
    released_at = await asyncio.wait_for(holding, timeout=40)
    acquired_at = await asyncio.wait_for(waiting, timeout=40)
    return acquired_at - released_at


async def _acquire_time(store: RedisTicketLockStore, cid: str) -> float:
    async with store.lock(cid, lock_lifetime=LIFETIME):
        return time.monotonic()


async def test_a_parked_waiter_survives_a_sentinel_failover_and_is_woken(
    fresh_redis_sentinel: SentinelGroup,
) -> None:
    group = fresh_redis_sentinel
    stores = _stores(kwargs_for(group))

    async def kill_and_wait() -> None:
        old = group.kill_master()
        await asyncio.to_thread(group.wait_for_failover, old, 30.0)

    try:
        delay = await _waiter_across_failover(stores, f"conv-{uuid.uuid4().hex}", kill_and_wait)
        assert delay < 10  # woken by the release, well before the 30 s ticket expiry
    finally:
        for store in stores:
            await store.close()


# uvloop's loop.close() did not return after a test that killed a Cluster master (CI, beyond
# any timeout): asyncio only until that is understood (see test_connection.py).
@pytest.mark.asyncio_only
async def test_a_parked_waiter_survives_a_cluster_failover_and_is_woken(
    fresh_redis_cluster: RedisCluster,
) -> None:
    cluster = fresh_redis_cluster
    stores = _stores(kwargs_for(cluster))
    cid = f"conv-{uuid.uuid4().hex}"

    async def kill_and_wait() -> None:
        old = cluster.kill_master_for_key(queue_key(cid))
        await asyncio.to_thread(cluster.wait_for_failover, old, key=queue_key(cid), timeout=30.0)

    try:
        delay = await _waiter_across_failover(stores, cid, kill_and_wait)
        assert delay < 10
    finally:
        for store in stores:
            await store.close()


# uvloop's loop.close() did not return after a test that killed a Cluster master (CI, beyond
# any timeout): asyncio only until that is understood (see test_connection.py).
@pytest.mark.asyncio_only
async def test_a_conversation_resharded_to_another_master_during_lock_cycles(
    fresh_redis_cluster: RedisCluster,
) -> None:
    """Scaling a Cluster moves slots between masters. While a conversation's slot moves, its
    scripts meet ASK (mid-move) and MOVED (after); cycles must go on with no failure and no
    overlap, and end up on the new master."""
    cluster = fresh_redis_cluster
    stores = _stores(kwargs_for(cluster))
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    slot = key_slot(queue_key(cid).encode())
    moved: list[tuple[str, int]] = []

    async def move() -> None:
        target = next(m for m in cluster.masters() if m is not cluster.master_for_slot(slot))
        await asyncio.to_thread(cluster.move_slot, slot, target)
        moved.append(target.address)

    try:
        stream = await run_through_failover(stores, [cid], move)
        owner = cluster.master_for_slot(slot)
        assert owner.address == moved[0]
        assert stream.cycles[cid] > 0
        owner.execute("CONFIG", "RESETSTAT")
        for store in stores:  # both stores now send the scripts to the new owner
            async with store.lock(cid, wait_time=5):
                pass
        stats = owner.execute("INFO", "commandstats")
        stats = stats.decode() if isinstance(stats, bytes) else str(stats)
        calls = re.search(r"cmdstat_evalsha:calls=(\d+)", stats)
        assert calls is not None and int(calls.group(1)) >= 4, stats
    finally:
        for store in stores:
            await store.close()


#: Messages queued behind a long holder: their waiting lease (this lifetime) is shorter than a
#: promotion, so it runs out on the new master while Redis is unreachable and each must
#: re-enter the line (``docs/locks.md``, "Failover") rather than fail.
WAITER_LIFETIME = 1.5
WAITERS = 3


async def _messages_behind_long_holders(
    stores: list[RedisTicketLockStore],
    conversations: list[str],
    kill_and_wait: Callable[[], Awaitable[None]],
) -> dict[str, list[int]]:
    """Each conversation: a holder (lifetime 30 s, the default 10 s lease) that holds through
    the failover, and ``WAITERS`` messages from both stores waiting behind it. Returns the
    fencing tokens in the order the messages held; raises if any message failed."""
    release = asyncio.Event()
    inside: Counter[str] = Counter()
    held_in_order: dict[str, list[int]] = {cid: [] for cid in conversations}
    overlaps: list[str] = []
    holders_lost: list[str] = []

    async def hold(store: RedisTicketLockStore, cid: str, lifetime: float,
                   until: asyncio.Event | None) -> None:
        async with store.lock(cid, lock_lifetime=lifetime) as held:
            inside[cid] += 1
            if inside[cid] > 1:
                overlaps.append(cid)
            held_in_order[cid].append(held.fencing_token)
            if until is not None:
                await until.wait()
                if held.lost:
                    holders_lost.append(cid)
            else:
                await asyncio.sleep(0.01)
            inside[cid] -= 1

    holders = []
    for cid in conversations:
        holders.append(asyncio.create_task(hold(stores[0], cid, LIFETIME, release)))
        await wait_for_tickets(stores[0], cid, 1)
    waiters = [
        asyncio.create_task(hold(stores[i % len(stores)], cid, WAITER_LIFETIME, None))
        for cid in conversations for i in range(WAITERS)
    ]
    try:
        for cid in conversations:
            await wait_for_tickets(stores[0], cid, 1 + WAITERS)
        await asyncio.sleep(0.5)  # the tickets are replicated; the waiters renew meanwhile
        await kill_and_wait()
        assert not any(w.done() for w in waiters), "a message got in ahead of its holder"
        await asyncio.sleep(0.5)
        release.set()
        # Any failed message raises here (LockError before re-entry).
        await asyncio.wait_for(asyncio.gather(*holders, *waiters), timeout=60)
    finally:
        release.set()
        for task in (*holders, *waiters):
            if not task.done():
                task.cancel()
    assert overlaps == []
    assert holders_lost == []
    for cid, tokens in held_in_order.items():
        assert len(tokens) == 1 + WAITERS, cid
        assert all(a < b for a, b in itertools.pairwise(tokens)), cid  # served in order
    return held_in_order


async def test_messages_waiting_behind_a_holder_survive_a_sentinel_failover(
    fresh_redis_sentinel: SentinelGroup,
) -> None:
    group = fresh_redis_sentinel
    stores = _stores(kwargs_for(group))
    conversations = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(2)]

    async def kill_and_wait() -> None:
        old = group.kill_master()
        await asyncio.to_thread(group.wait_for_failover, old, 30.0)

    try:
        await _messages_behind_long_holders(stores, conversations, kill_and_wait)
    finally:
        for store in stores:
            await store.close()


# uvloop's loop.close() did not return after a test that killed a Cluster master (CI, beyond
# any timeout): asyncio only until that is understood (see test_connection.py). Run once on
# uvloop for issue #29, this test's assertions passed and then the loop's close hung the same way.
@pytest.mark.asyncio_only
async def test_messages_waiting_behind_a_holder_survive_a_cluster_failover(
    fresh_redis_cluster: RedisCluster,
) -> None:
    cluster = fresh_redis_cluster
    stores = _stores(kwargs_for(cluster))
    conversations = [f"conv-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    victim = queue_key(conversations[0])

    async def kill_and_wait() -> None:
        old = cluster.kill_master_for_key(victim)
        await asyncio.to_thread(cluster.wait_for_failover, old, key=victim, timeout=30.0)

    try:
        await _messages_behind_long_holders(stores, conversations, kill_and_wait)
    finally:
        for store in stores:
            await store.close()
