"""The in-memory ticket lock store: Rasa's semantics, FIFO, woken by release, never polling."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import pytest

from turnstile.stores.errors import ConfigurationError, LockError, LockTimeoutError
from turnstile.stores.locks.api import (
    DEFAULT_LOCK_LIFETIME,
    Ticket,
    TicketLock,
    default_lock_lifetime,
)
from turnstile.stores.locks.memory import InMemoryTicketLockStore


@pytest.fixture
def store() -> InMemoryTicketLockStore:
    return InMemoryTicketLockStore(lock_lifetime=10)


async def test_a_free_conversation_is_held_at_once_and_freed_after(
    store: InMemoryTicketLockStore,
) -> None:
    async with store.lock("c") as held:
        assert held.conversation_id == "c"
        assert held.ticket.expires > time.time()
        assert await store.is_someone_waiting("c")
    assert await store.get_lock("c") is None
    assert not await store.is_someone_waiting("c")


async def test_twenty_tasks_never_overlap_and_are_served_in_arrival_order(
    store: InMemoryTicketLockStore,
) -> None:
    holders, most, order = 0, 0, []

    async def handle(i: int) -> None:
        nonlocal holders, most
        async with store.lock("c"):
            holders += 1
            most = max(most, holders)
            order.append(i)
            await asyncio.sleep(0.002)
            holders -= 1

    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(handle(i)))
        await asyncio.sleep(0)  # each task draws its ticket before the next starts
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert most == 1
    assert order == list(range(20))


async def test_fencing_tokens_grow_with_every_holder_even_after_the_queue_empties(
    store: InMemoryTicketLockStore,
) -> None:
    tokens = []
    for _ in range(5):
        async with store.lock("c") as held:
            tokens.append(held.fencing_token)
    assert tokens == sorted(set(tokens))


async def test_a_waiter_is_woken_by_the_release_not_by_the_holders_expiry(
    store: InMemoryTicketLockStore,
) -> None:
    released = asyncio.Event()
    acquired_after: list[float] = []

    async def holder() -> None:
        async with store.lock("c", lock_lifetime=30):
            await asyncio.sleep(0.05)
            released.set()

    async def waiter() -> None:
        async with store.lock("c", lock_lifetime=30):
            acquired_after.append(time.monotonic())

    h = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    w = asyncio.create_task(waiter())
    await released.wait()
    release_time = time.monotonic()
    await asyncio.wait_for(asyncio.gather(h, w), timeout=5)
    # Well before the 30 s safety net: the release woke it.
    assert acquired_after[0] - release_time < 1.0


async def test_a_dead_holders_ticket_expires_and_the_next_waiter_proceeds(
    store: InMemoryTicketLockStore,
) -> None:
    await store.issue_ticket("c", lock_lifetime=0.2)  # a holder that never returns its ticket
    started = time.monotonic()
    async with store.lock("c", lock_lifetime=5):
        waited = time.monotonic() - started
    assert 0.1 < waited < 3


async def test_wait_time_bounds_the_wait_and_frees_the_waiters_place(
    store: InMemoryTicketLockStore,
) -> None:
    number = await store.issue_ticket("c", lock_lifetime=10)
    with pytest.raises(LockTimeoutError):
        async with store.lock("c", wait_time=0.05):
            pytest.fail("must not be reached")
    lock = await store.get_lock("c")
    assert lock is not None
    assert [t.number for t in lock.tickets] == [number]


async def test_a_waiter_outlives_its_own_lifetime_behind_a_dead_holder_and_is_served(
    store: InMemoryTicketLockStore,
) -> None:
    # The dead holder's ticket lives 1 s; the waiter's lifetime is 0.2 s, but it counts from
    # the turn: the waiter is served when the dead ticket frees, not dropped with it.
    await store.issue_ticket("c", lock_lifetime=1.0)
    started = time.monotonic()
    async with store.lock("c", lock_lifetime=0.2) as held:
        waited = time.monotonic() - started
        assert held.ticket.expires - time.time() > 0.1  # a whole lifetime from the turn
    assert 0.8 < waited < 3


async def test_a_waiting_ticket_whose_waiter_is_gone_leaves_within_its_lease(
    store: InMemoryTicketLockStore,
) -> None:
    holder = await store.issue_ticket("c", lock_lifetime=30)
    # A ticket drawn to wait whose waiter never renews it (its process died): one lease.
    gone = await store._issue("c", "gone-waiter", 0.6)
    served = asyncio.Event()

    async def live_waiter() -> None:
        async with store.lock("c", lock_lifetime=0.6):
            served.set()

    task = asyncio.create_task(live_waiter())
    await asyncio.sleep(1.0)  # past both leases: only the renewed one is left
    lock = await store.get_lock("c")
    assert lock is not None
    numbers = [t.number for t in lock.tickets]
    assert holder in numbers and gone.ticket.number not in numbers and len(numbers) == 2
    await store.finish_serving("c", holder)
    await asyncio.wait_for(served.wait(), timeout=2)
    await task


async def test_deleting_the_lock_fails_the_waiters_at_once(
    store: InMemoryTicketLockStore,
) -> None:
    await store.issue_ticket("c", lock_lifetime=30)

    async def wait() -> None:
        async with store.lock("c", lock_lifetime=30):
            pass

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.02)
    await store.delete_lock("c")
    with pytest.raises(LockError):
        await asyncio.wait_for(task, timeout=2)


async def test_a_cancelled_waiter_leaves_the_queue(store: InMemoryTicketLockStore) -> None:
    first = await store.issue_ticket("c")
    task = asyncio.create_task(store.lock("c").__aenter__())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    lock = await store.get_lock("c")
    assert lock is not None
    assert [t.number for t in lock.tickets] == [first]


async def test_rasa_shaped_ticket_methods(store: InMemoryTicketLockStore) -> None:
    one = await store.issue_ticket("c")
    two = await store.issue_ticket("c")
    assert two > one
    lock = await store.get_lock("c")
    assert isinstance(lock, TicketLock)
    assert lock.now_serving == one
    assert lock.last_issued == two
    assert lock.is_locked(two) and not lock.is_locked(one)
    await store.finish_serving("c", one)
    lock = await store.get_lock("c")
    assert lock is not None and lock.now_serving == two
    await store.finish_serving("c", two)
    assert not await store.is_someone_waiting("c")


async def test_save_lock_replaces_tickets_and_drops_expired_ones(
    store: InMemoryTicketLockStore,
) -> None:
    now = time.time()
    ahead = int(now * 1_000_000) + 10**9  # numbers are microsecond clock readings or higher
    lock = TicketLock(
        "c", deque([Ticket(7, now + 30), Ticket(8, now - 1), Ticket(ahead, now + 30)])
    )
    await store.save_lock(lock)
    saved = await store.get_lock("c")
    assert saved is not None
    assert [t.number for t in saved.tickets] == [7, ahead]
    assert await store.issue_ticket("c") == ahead + 1
    await store.delete_lock("c")
    assert await store.get_lock("c") is None


async def test_ticket_lock_round_trips_through_rasas_json() -> None:
    lock = TicketLock("c", deque([Ticket(1, 2.5)]))
    assert TicketLock.from_dict(__import__("json").loads(lock.dumps())) == lock


async def test_the_store_works_from_another_threads_event_loop(
    store: InMemoryTicketLockStore,
) -> None:
    got: list[int] = []

    def other_thread() -> None:
        async def use() -> None:
            async with store.lock("c") as held:
                got.append(held.fencing_token)

        asyncio.run(use())

    async with store.lock("c"):
        thread = threading.Thread(target=other_thread)
        thread.start()
        await asyncio.sleep(0.05)
        assert got == []  # waiting in the other loop for our release
    await asyncio.to_thread(thread.join, 5)
    assert len(got) == 1


def test_default_lifetime_comes_from_rasas_variable() -> None:
    assert default_lock_lifetime({}) == DEFAULT_LOCK_LIFETIME
    assert default_lock_lifetime({"TICKET_LOCK_LIFETIME": "5"}) == 5
    assert default_lock_lifetime({"TICKET_LOCK_LIFETIME": "0"}) == DEFAULT_LOCK_LIFETIME
    with pytest.raises(ConfigurationError, match="TICKET_LOCK_LIFETIME"):
        default_lock_lifetime({"TICKET_LOCK_LIFETIME": "soon"})


def test_a_bad_lifetime_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigurationError, match="lock_lifetime"):
        InMemoryTicketLockStore(lock_lifetime=0)


async def test_a_waiter_cancelled_at_any_step_ends_cancelled_without_its_ticket(
    store: InMemoryTicketLockStore,
) -> None:
    """Wherever a cancellation lands in a waiter (drawing, waiting, being woken), the waiter
    ends cancelled and its ticket is gone, so the conversation is free once the holder is."""
    release = asyncio.Event()

    async def holder() -> None:
        async with store.lock("c", lock_lifetime=30):
            await release.wait()

    async def waiter() -> None:
        async with store.lock("c", lock_lifetime=30):
            pytest.fail("a cancelled waiter got the lock")

    holding = asyncio.create_task(holder())
    await asyncio.sleep(0)
    try:
        for steps in range(8):
            task = asyncio.create_task(waiter())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done and task.cancelled(), f"after {steps} steps: {task!r}"
            lock = await store.get_lock("c")
            assert lock is not None and len(lock.tickets) == 1, f"after {steps} steps: {lock}"
    finally:
        release.set()
        await asyncio.wait_for(holding, 5)
    assert await store.get_lock("c") is None


async def test_a_lock_context_is_entered_once(store: InMemoryTicketLockStore) -> None:
    """Each ``lock()`` call is one ticket; re-entering the same context would reuse its id."""
    context = store.lock("once")
    async with context as held:
        assert held.conversation_id == "once"
    with pytest.raises(RuntimeError, match="entered twice"):
        async with context:
            pass
    assert await store.get_lock("once") is None
