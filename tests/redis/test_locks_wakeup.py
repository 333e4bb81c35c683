"""The wake-up keyed by the ticket in front (``locks.lua`` module doc), on real Redis.

A waiter blocks on the "done" list of the ticket directly ahead of it; each way that ticket can
leave the line must wake it well before its safety net (the 30 s lifetimes here, and the socket
timeout and lease renewal that bound every block): a release by id and number (the lock
context), by number only (Rasa's ``finish_serving``), by id only (a message cancelled while
drawing), and a waiter ahead that gives up. Each store below is another process's: only the
first local waiter of a conversation blocks in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.redis import test_locks
from tests.redis.test_locks import StoreFactory, conversation, wait_for_tickets
from turnstile.stores.errors import LockTimeoutError
from turnstile.stores.locks.lua import WAKE_TTL_MS
from turnstile.stores.locks.redis import RedisTicketLockStore, queue_key

make_store = test_locks.make_store  # the same fixture: standalone, Cluster, Sentinel

#: Well below the longest block without a wake-up here: ``socket_timeout`` (2 s in the test
#: topologies) minus the 0.5 s margin. Without the pushes these waits take ~1.3 s.
PROMPT = 0.5


async def _served_after(
    store: RedisTicketLockStore, cid: str, release: Callable[[], Awaitable[Any]]
) -> float:
    """Seconds from ``release()`` to a waiter on ``store``, queued behind, holding the lock."""
    acquired: list[float] = []

    async def waiter() -> None:
        async with store.lock(cid, lock_lifetime=30):
            acquired.append(time.monotonic())

    before = await store.get_lock(cid)
    last = before.last_issued if before is not None else 0
    task = asyncio.create_task(waiter())
    # Queued behind: a condition, not a guess (on a loaded machine a fixed 0.3 s may pass before
    # the draw, and a release before it measures nothing); then time to park in its pop.
    for _ in range(500):
        lock = await store.get_lock(cid)
        if lock is not None and lock.last_issued > last:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the waiter never drew its ticket")
    await asyncio.sleep(0.2)
    released_at = time.monotonic()
    await release()
    await asyncio.wait_for(task, timeout=10)
    return acquired[0] - released_at


async def test_finish_serving_by_number_wakes_the_ticket_behind(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    cid = conversation()
    number = await store.issue_ticket(cid, lock_lifetime=30)
    took = await _served_after(other, cid, lambda: store.finish_serving(cid, number))
    assert took < PROMPT


async def test_a_release_by_id_only_wakes_the_tickets_behind(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    cid = conversation()
    await store._issue(cid, "drawn-then-cancelled", 30)
    # No number: the release cannot name the done list, so it asks everyone behind again.
    took = await _served_after(
        other, cid, lambda: store._release(cid, ticket_id="drawn-then-cancelled")
    )
    assert took < PROMPT


async def test_a_waiter_ahead_that_gives_up_hands_its_place_on(make_store: StoreFactory) -> None:
    holder_store, middle_store, last_store = make_store(), make_store(), make_store()
    cid = conversation()
    number = await holder_store.issue_ticket(cid, lock_lifetime=30)

    async def middle() -> None:
        async with middle_store.lock(cid, lock_lifetime=30, wait_time=0.4):
            raise AssertionError("the holder keeps the lock past this wait time")

    gives_up = asyncio.create_task(middle())
    await wait_for_tickets(holder_store, cid, 2)

    async def release() -> None:
        with contextlib.suppress(LockTimeoutError):
            await gives_up
        # The last waiter now waits on the holder's done list, not on the one that left.
        await asyncio.sleep(0.2)
        await holder_store.finish_serving(cid, number)

    took = await _served_after(last_store, cid, release)
    assert took < 0.2 + PROMPT


async def test_a_contended_burst_leaves_only_expiring_wake_lists(
    make_store: StoreFactory,
) -> None:
    stores = [make_store(), make_store()]
    cid = conversation()

    async def handle(i: int) -> None:
        async with stores[i % 2].lock(cid, lock_lifetime=20):
            await asyncio.sleep(0.002)

    await asyncio.wait_for(asyncio.gather(*(handle(i) for i in range(12))), timeout=30)
    await stores[0].delete_lock(cid)
    client = await stores[0].connection.client()
    queue = queue_key(cid)
    left = [k.decode() if isinstance(k, bytes) else k for k in await client.keys(f"{queue}*")]
    assert queue not in left
    for key in left:
        assert key.startswith((f"{queue}:d:", f"{queue}:x"))
        assert 0 < await client.pttl(key) <= WAKE_TTL_MS
