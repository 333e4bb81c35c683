"""Tickets that disappear from Redis, in all three deployment modes and on both event loops.

A failover can lose a master's last writes (async replication), and a waiting lease or a
holder lease can run out while Redis is unreachable. Here a ticket is made to disappear the way
a lost write looks to the next master: its fields are removed from the conversation's hash
behind the store's back. A waiter then re-enters the line (in its place when a ticket ahead of
it proves that safe, else at the back) instead of failing; a holder whose queue is empty gets
its ticket back; a ticket removed on purpose (``delete_lock``, a release by number) stays gone;
and a release that finds its ticket gone says why (``docs/locks.md``, "Failover").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from tests.redis import test_locks
from tests.redis.test_locks import StoreFactory, conversation, wait_for_tickets
from turnstile.stores._redis.connection import RedisConnection
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.errors import LockError
from turnstile.stores.locks.lua import RELEASE
from turnstile.stores.locks.redis import RedisTicketLockStore, queue_key

make_store = test_locks.make_store  # the same fixture: standalone, Cluster, Sentinel

#: A waiter's lifetime: its waiting lease is as long, renewed (and so re-checked) every third.
WAITER_LIFETIME = 1.5
HOLDER_LIFETIME = 30.0
#: A holder's lease here: renewed every third, so a lost ticket is noticed within ~0.4 s.
HOLDER_LEASE = 1.0


async def _numbers(store: RedisTicketLockStore, cid: str) -> list[int]:
    lock = await store.get_lock(cid)
    return [] if lock is None else [t.number for t in lock.tickets]


async def _lose(store: RedisTicketLockStore, cid: str, numbers: set[int]) -> None:
    """Remove the tickets numbered ``numbers`` as a failover that lost them would."""
    client = await store.connection.client()
    key = queue_key(cid)
    fields = await client.hgetall(key)
    ids = [f for f, v in fields.items() if not f.startswith("~") and int(v) in numbers]
    assert len(ids) == len(numbers), fields
    await client.hdel(key, *ids, *(f"~{i}" for i in ids), *(f"~~{i}" for i in ids))


#: Removes a ticket and queues another in the same instant (one script, so the holder's renewal
#: cannot run in between): KEYS[1] = the queue, ARGV = the lost id, the intruder's number and
#: expiry (ms since the epoch).
_LOSE_TO_AN_INTRUDER = """
redis.call('HDEL', KEYS[1], ARGV[1], '~' .. ARGV[1], '~~' .. ARGV[1])
redis.call('HSET', KEYS[1], 'intruder', ARGV[2], '~intruder', ARGV[3])
return 1
"""


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    """Bounded wait for an async predicate."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_waiter_whose_ticket_is_lost_keeps_its_place_behind_the_holder(
    make_store: StoreFactory,
) -> None:
    holder_store, waiter_store = make_store(), make_store()
    cid = conversation()
    release = asyncio.Event()
    order: list[str] = []

    async def hold() -> None:
        async with holder_store.lock(cid, lock_lifetime=HOLDER_LIFETIME):
            await release.wait()

    async def wait(name: str) -> int:
        async with waiter_store.lock(cid, lock_lifetime=WAITER_LIFETIME) as held:
            order.append(name)
            return held.fencing_token

    holding = asyncio.create_task(hold())
    await wait_for_tickets(holder_store, cid, 1)
    first = asyncio.create_task(wait("first"))
    await wait_for_tickets(holder_store, cid, 2)
    second = asyncio.create_task(wait("second"))
    await wait_for_tickets(holder_store, cid, 3)
    numbers = await _numbers(holder_store, cid)
    await _lose(holder_store, cid, {numbers[1]})

    async def back_in_place() -> bool:
        return await _numbers(holder_store, cid) == numbers

    await _until(back_in_place)  # at its next CHECK, a third of its lease later
    release.set()
    await asyncio.wait_for(holding, timeout=10)
    assert await asyncio.wait_for(first, timeout=10) == numbers[1]  # its own number: its turn
    assert await asyncio.wait_for(second, timeout=10) == numbers[2]
    assert order == ["first", "second"]


async def test_a_waiter_lost_with_every_ticket_ahead_reenters_at_the_back(
    make_store: StoreFactory,
) -> None:
    store, waiter_store = make_store(), make_store()
    cid = conversation()
    await store.issue_ticket(cid, lock_lifetime=HOLDER_LIFETIME)

    async def wait() -> int:
        async with waiter_store.lock(cid, lock_lifetime=WAITER_LIFETIME) as held:
            return held.fencing_token

    waiting = asyncio.create_task(wait())
    await wait_for_tickets(store, cid, 2)
    numbers = await _numbers(store, cid)
    await _lose(store, cid, set(numbers))
    # Nothing ahead is left to prove its old place safe: it re-enters with a new, higher number
    # (the fencing token keeps growing) and, alone in the line, takes the turn.
    token = await asyncio.wait_for(waiting, timeout=10)
    assert token > numbers[1]


async def test_a_waiter_whose_ticket_is_released_by_number_fails(
    make_store: StoreFactory,
) -> None:
    store, waiter_store = make_store(), make_store()
    cid = conversation()
    await store.issue_ticket(cid, lock_lifetime=HOLDER_LIFETIME)

    async def wait() -> None:
        async with waiter_store.lock(cid, lock_lifetime=WAITER_LIFETIME):
            pytest.fail("must not be reached")

    waiting = asyncio.create_task(wait())
    await wait_for_tickets(store, cid, 2)
    numbers = await _numbers(store, cid)
    await store.finish_serving(cid, numbers[1])  # removed on purpose: the gone mark covers it
    with pytest.raises(LockError):
        await asyncio.wait_for(waiting, timeout=10)
    assert await _numbers(store, cid) == numbers[:1]
    await store.delete_lock(cid)


async def test_a_holder_whose_ticket_is_lost_gets_it_back_when_nobody_was_let_in(
    make_store: StoreFactory,
) -> None:
    store = make_store(lock_lease=HOLDER_LEASE)
    cid = conversation()
    async with store.lock(cid, lock_lifetime=HOLDER_LIFETIME) as held:
        await _lose(store, cid, {held.fencing_token})

        async def back() -> bool:
            return await _numbers(store, cid) == [held.fencing_token]

        await _until(back)  # at its next renewal, a third of a lease later
        assert not held.lost
    assert await _numbers(store, cid) == []


async def test_a_holder_whose_ticket_is_lost_after_another_was_let_in_learns_it(
    make_store: StoreFactory,
) -> None:
    store, other = make_store(lock_lease=HOLDER_LEASE), make_store()
    cid = conversation()
    async with store.lock(cid, lock_lifetime=HOLDER_LIFETIME) as held:
        client = await store.connection.client()
        intruder = held.fencing_token + 1
        expires = int((time.time() + HOLDER_LIFETIME) * 1000)
        await client.eval(_LOSE_TO_AN_INTRUDER, 1, queue_key(cid), held.ticket_id, intruder,
                          expires)
        await asyncio.wait_for(held.lost_event.wait(), timeout=10)
        assert await _numbers(store, cid) == [intruder]
    await other.delete_lock(cid)


async def test_a_release_that_finds_its_ticket_removed_early_does_not_blame_the_lifetime(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(lock_lease=0)
    cid = conversation()
    with caplog.at_level(logging.WARNING, logger="turnstile.stores.locks.api"):
        async with store.lock(cid, lock_lifetime=HOLDER_LIFETIME):
            await store.delete_lock(cid)
    messages = [r.getMessage() for r in caplog.records]
    assert any("before it could expire" in m for m in messages), messages
    assert not any("longer than its lock_lifetime" in m for m in messages), messages


class _ClosesAfterRelease(RedisConnection):
    """Closes its script connections right after the next RELEASE is written, before its reply
    is read: what a routing refresh (``RedisConnection._refresh``) does to a call in flight."""

    armed = False

    async def eval_counting(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, int]:
        if script is RELEASE and self.armed:
            self.armed = False
            for lane in self._lanes.values():  # the reply stays unread...
                transport = lane._transport
                assert transport is not None
                transport.pause_reading()
            # ... until this runs, once the caller waits for it: the command is written.
            asyncio.get_running_loop().call_soon(self._close_lanes)
        return await super().eval_counting(script, keys, args)


class _Store(RedisTicketLockStore):
    connection_class: ClassVar[type[RedisConnection]] = _ClosesAfterRelease


async def test_a_release_whose_reply_is_lost_is_not_reported_as_overtaken(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Store(make_store().settings, lock_lease=None)
    cid = conversation()

    def lost_replies() -> int:
        return sum("reply to releasing" in r.getMessage() for r in caplog.records)

    try:
        with caplog.at_level(logging.INFO, logger="turnstile.stores"):
            for _ in range(3):  # bounded; the first cycle is enough
                async with store.lock(cid, lock_lifetime=HOLDER_LIFETIME):
                    conn = store.connection
                    assert isinstance(conn, _ClosesAfterRelease)
                    conn.armed = True
                if lost_replies():
                    break
    finally:
        await store.close()
    assert lost_replies() == 1
    assert await _numbers(make_store(), cid) == []  # it was released, by the first attempt
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
