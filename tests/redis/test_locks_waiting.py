"""Waiting in line on real Redis: behind dead holders, after dead waiters, with few connections.

A message waiting behind a holder that died is served when the dead ticket expires (its own
lifetime counts from its turn); a waiter that died leaves the line within one waiting lease; a
burst of waiters needs a bounded number of Redis connections; and a store's connections close
with the event loop that made them, without anybody calling ``close()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
import uvloop

from tests.platform.redis_servers import RedisServer, store_kwargs
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.redis_tickets import RedisTicketLockStore

MODES = ("standard", "cluster", "sentinel")
StoreFactory = Callable[..., RedisTicketLockStore]


@pytest.fixture(params=MODES)
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    fixture = {"standard": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[request.param]
    topology = request.getfixturevalue(fixture)
    stores: list[RedisTicketLockStore] = []

    def make(**extra: Any) -> RedisTicketLockStore:
        store = RedisTicketLockStore.from_kwargs(store_kwargs(topology, db=0, **extra))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def conversation() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


async def test_a_waiter_behind_a_dead_holder_is_served_when_the_dead_ticket_expires(
    make_store: StoreFactory,
) -> None:
    # The dead holder drew its ticket a moment before the waiters (as a killed pod does) and
    # lives 1.5 s; the waiters' own lifetime is 1 s, but it counts from their turn.
    dead, survivor = make_store(), make_store()
    cid = conversation()
    await dead.issue_ticket(cid, lock_lifetime=1.5)
    # Connected first: while a cold connection dials, later callers can overtake earlier ones
    # on the way to Redis, and arrival order is the order tickets are drawn in.
    assert await survivor.get_lock(cid) is not None
    order: list[int] = []
    started = time.monotonic()

    async def message(i: int) -> None:
        async with survivor.lock(cid, lock_lifetime=1.0):
            order.append(i)
            await asyncio.sleep(0.01)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(message(i)))
        await asyncio.sleep(0.01)  # arrival order
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert order == [0, 1, 2, 3, 4]  # none dropped, in arrival order
    assert 1.3 < time.monotonic() - started < 6


async def test_a_dead_waiters_ticket_leaves_the_line_within_its_lease(
    make_store: StoreFactory,
) -> None:
    store, other = make_store(), make_store()
    cid = conversation()
    holder = await store.issue_ticket(cid, lock_lifetime=30)
    # Drawn to wait, and never renewed: the waiter's process is gone. Its lease is its
    # lifetime here (below the 10 s cap).
    gone = await other._issue(cid, "gone-waiter", 1.0)
    served = asyncio.Event()

    async def live_waiter() -> None:
        async with store.lock(cid, lock_lifetime=1.0):
            served.set()

    task = asyncio.create_task(live_waiter())
    await asyncio.sleep(1.6)  # past both leases: the live waiter renewed its own
    lock = await store.get_lock(cid)
    assert lock is not None
    numbers = [t.number for t in lock.tickets]
    assert numbers[0] == holder and gone.ticket.number not in numbers and len(numbers) == 2
    await store.finish_serving(cid, holder)
    await asyncio.wait_for(served.wait(), timeout=3)
    await task


async def test_the_holders_lifetime_counts_from_its_turn(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    cid = conversation()
    first = await other.issue_ticket(cid, lock_lifetime=30)

    async def later() -> float:
        async with store.lock(cid, lock_lifetime=5) as held:
            return held.ticket.expires - time.time()

    task = asyncio.create_task(later())
    await asyncio.sleep(1.2)
    await other.finish_serving(cid, first)
    remaining = await asyncio.wait_for(task, timeout=5)
    assert 4.0 < remaining <= 5.0  # not 5 s from the draw, 1.2 s earlier


def _clients(address: tuple[str, int], name: str) -> int:
    client = redis.Redis(host=address[0], port=address[1], decode_responses=True)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == name)
    finally:
        client.close()


async def test_a_burst_of_waiters_uses_a_bounded_number_of_connections(
    redis_server: RedisServer,
) -> None:
    name = f"bound-{uuid.uuid4().hex[:8]}"
    settings = RedisSettings.read(
        SettingsReader(store_kwargs(redis_server, db=0), section="lock_store"), default_db=0
    )
    store = RedisTicketLockStore(settings, client_name=name, wait_connections=3)
    holders = RedisTicketLockStore(settings, client_name=f"{name}-h")
    cids = [conversation() for _ in range(6)]
    held = {cid: await holders.issue_ticket(cid, lock_lifetime=30) for cid in cids}
    served: dict[str, list[int]] = {cid: [] for cid in cids}

    async def message(cid: str, i: int) -> None:
        async with store.lock(cid, lock_lifetime=10):
            served[cid].append(i)

    tasks = []
    for i in range(8):  # 8 waiters on each of 6 conversations: 48 waiting messages
        for cid in cids:
            tasks.append(asyncio.create_task(message(cid, i)))
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.5)
    try:
        # One script connection and at most 3 blocked in wake-up waits.
        assert _clients((redis_server.host, redis_server.port), name) <= 1 + 3
        for cid in cids:
            await holders.finish_serving(cid, held[cid])
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        assert all(order == list(range(8)) for order in served.values())
    finally:
        for task in tasks:
            task.cancel()
        await store.close()
        await holders.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_connections_close_with_their_event_loop_without_close(
    redis_server: RedisServer, loop_kind: str
) -> None:
    name = f"loop-{uuid.uuid4().hex[:8]}"
    settings = RedisSettings.read(
        SettingsReader(store_kwargs(redis_server, db=0), section="lock_store"), default_db=0
    )
    store = RedisTicketLockStore(settings, client_name=name)
    address = (redis_server.host, redis_server.port)
    seen: list[int] = []

    async def serve() -> None:
        cid = conversation()
        holder = await store.issue_ticket(cid, lock_lifetime=5)

        async def wait() -> None:
            async with store.lock(cid):  # blocks in a pooled connection until released
                pass

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.2)
        await store.finish_serving(cid, holder)
        await task
        seen.append(_clients(address, name))

    # As a server runs its loop: in another thread, closed when it stops; store.close() is
    # never called.
    runner = asyncio.run if loop_kind == "asyncio" else uvloop.run
    thread = threading.Thread(target=runner, args=(serve(),))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert seen and seen[0] >= 2  # the script connection and the blocking one were open
    for _ in range(100):  # the server notices a closed socket within a moment
        if _clients(address, name) == 0:
            break
        time.sleep(0.02)
    assert _clients(address, name) == 0
