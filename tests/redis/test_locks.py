"""The Redis ticket lock store on real Redis, in all three deployment modes.

Two store instances stand for two Rasa replicas. Each test uses its own conversation ids, so
the session-scoped servers are shared safely.
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

from tests.platform.redis_fixtures import REDIS_ACL_PASSWORD, REDIS_ACL_USER, REDIS_PASSWORD
from tests.platform.redis_servers import RedisServer, store_kwargs
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.errors import LockError, LockTimeoutError
from turnstile.stores.locks.redis import RedisTicketLockStore, queue_key

MODES = ("standard", "cluster", "sentinel")


def kwargs_for(topology: Any, **extra: Any) -> dict[str, Any]:
    """Rasa-style ``endpoints.yml`` keys for a test topology, in database 0."""
    return store_kwargs(topology, **{"db": 0, **extra})


StoreFactory = Callable[..., RedisTicketLockStore]


@pytest.fixture(params=MODES)
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    fixture = {"standard": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[request.param]
    topology = request.getfixturevalue(fixture)
    stores: list[RedisTicketLockStore] = []

    def make(**extra: Any) -> RedisTicketLockStore:
        store = RedisTicketLockStore.from_kwargs(kwargs_for(topology, **extra))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def conversation() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


async def wait_for_tickets(store: RedisTicketLockStore, cid: str, count: int) -> None:
    """Bounded wait until ``count`` tickets are queued for ``cid``."""
    for _ in range(500):
        lock = await store.get_lock(cid)
        if lock is not None and len(lock.tickets) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} tickets were never queued for {cid}")


async def test_twenty_tasks_on_two_stores_never_overlap(make_store: StoreFactory) -> None:
    stores = [make_store(), make_store()]
    cid = conversation()
    holders, most, served = 0, 0, 0

    async def handle(i: int) -> None:
        nonlocal holders, most, served
        async with stores[i % 2].lock(cid, lock_lifetime=20):
            holders += 1
            most = max(most, holders)
            await asyncio.sleep(0.003)
            served += 1
            holders -= 1

    await asyncio.wait_for(asyncio.gather(*(handle(i) for i in range(20))), timeout=30)
    assert (most, served) == (1, 20)
    assert await stores[0].get_lock(cid) is None


async def test_waiters_are_served_in_arrival_order_with_growing_fencing_tokens(
    make_store: StoreFactory,
) -> None:
    stores = [make_store(), make_store()]
    cid = conversation()
    order: list[tuple[int, int]] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with stores[0].lock(cid, lock_lifetime=20) as held:
            order.append((-1, held.fencing_token))
            await release.wait()

    async def waiter(i: int) -> None:
        async with stores[i % 2].lock(cid, lock_lifetime=20) as held:
            order.append((i, held.fencing_token))

    tasks = [asyncio.create_task(holder())]
    await wait_for_tickets(stores[0], cid, 1)
    for i in range(6):
        tasks.append(asyncio.create_task(waiter(i)))
        await wait_for_tickets(stores[0], cid, i + 2)
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
    assert [i for i, _ in order] == [-1, 0, 1, 2, 3, 4, 5]
    tokens = [t for _, t in order]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


async def test_a_waiter_is_woken_by_the_release_well_before_the_safety_net(
    make_store: StoreFactory,
) -> None:
    holder_store, waiter_store = make_store(), make_store()
    cid = conversation()
    released_at: list[float] = []

    async def holder() -> None:
        async with holder_store.lock(cid, lock_lifetime=30):
            await wait_for_tickets(holder_store, cid, 2)  # the waiter is queued (and blocking)
            await asyncio.sleep(0.2)
            released_at.append(time.monotonic())

    task = asyncio.create_task(holder())
    await wait_for_tickets(waiter_store, cid, 1)
    async with waiter_store.lock(cid, lock_lifetime=30):
        acquired_at = time.monotonic()
    await task
    # The holder's ticket would live 30 s; the waiter got in right after the release.
    assert 0 <= acquired_at - released_at[0] < 2.0


async def test_a_dead_holders_ticket_expires_and_the_next_waiter_proceeds(
    make_store: StoreFactory,
) -> None:
    dead, alive = make_store(), make_store()
    cid = conversation()
    await dead.issue_ticket(cid, lock_lifetime=0.5)  # its holder "dies" without releasing
    started = time.monotonic()
    async with alive.lock(cid, lock_lifetime=10):
        waited = time.monotonic() - started
    assert 0.3 < waited < 5


async def test_wait_time_bounds_the_wait(make_store: StoreFactory) -> None:
    store = make_store()
    cid = conversation()
    first = await store.issue_ticket(cid, lock_lifetime=10)
    with pytest.raises(LockTimeoutError):
        async with store.lock(cid, wait_time=0.2):
            pytest.fail("must not be reached")
    lock = await store.get_lock(cid)
    assert lock is not None and [t.number for t in lock.tickets] == [first]
    await store.delete_lock(cid)


async def test_deleting_the_lock_fails_a_blocked_waiter_at_once(
    make_store: StoreFactory,
) -> None:
    store, other = make_store(), make_store()
    cid = conversation()
    await store.issue_ticket(cid, lock_lifetime=30)

    async def wait() -> None:
        async with other.lock(cid, lock_lifetime=30):
            pytest.fail("must not be reached")

    task = asyncio.create_task(wait())
    await wait_for_tickets(store, cid, 2)
    await asyncio.sleep(0.05)  # parked in its blocking pop
    await store.delete_lock(cid)
    with pytest.raises(LockError):
        await asyncio.wait_for(task, timeout=5)  # well before the 30 s ticket expiry


async def test_fencing_tokens_grow_across_cycles_and_after_the_key_is_gone(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    cid = conversation()
    tokens = []
    for _ in range(5):
        async with store.lock(cid) as held:
            tokens.append(held.fencing_token)
        assert await store.get_lock(cid) is None  # nothing is left behind between cycles
    assert tokens == sorted(set(tokens))


async def test_a_repeated_issue_with_the_same_id_queues_one_ticket(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    cid = conversation()
    first = await store._issue(cid, "same-id", 10)
    again = await store._issue(cid, "same-id", 10)
    assert again.ticket.number == first.ticket.number and again.at_head
    lock = await store.get_lock(cid)
    assert lock is not None and len(lock.tickets) == 1
    assert await store._release(cid, ticket_id="same-id")
    assert not await store._release(cid, ticket_id="same-id")  # a repeated release is harmless


async def test_rasa_shaped_methods(make_store: StoreFactory) -> None:
    store = make_store(key_prefix="bot1")
    cid = conversation()
    one = await store.issue_ticket(cid)
    two = await store.issue_ticket(cid)
    assert two > one
    lock = await store.get_lock(cid)
    assert lock is not None and (lock.now_serving, lock.last_issued) == (one, two)
    await store.finish_serving(cid, one)
    assert await store.is_someone_waiting(cid)
    await store.save_lock(lock)
    lock = await store.get_lock(cid)
    assert lock is not None and [t.number for t in lock.tickets] == [one, two]
    await store.delete_lock(cid)
    assert not await store.is_someone_waiting(cid)


async def test_keys_carry_the_prefix_and_one_hash_tag(redis_server: RedisServer) -> None:
    prefix = f"bot7x{uuid.uuid4().hex[:8]}"  # runs once per event loop on one server
    store = RedisTicketLockStore.from_kwargs(kwargs_for(redis_server, key_prefix=prefix))
    cid = "weird}{conversation"
    try:
        await store.issue_ticket(cid, lock_lifetime=5)
        client = await store.connection.client()
        keys = await client.keys(f"{prefix}:*")
        assert keys == [queue_key(cid, prefix)]
        assert 0 < await client.pttl(keys[0]) <= 5000  # an abandoned queue expires by itself
        await store.delete_lock(cid)
    finally:
        await store.close()


async def test_password_and_acl_user(redis_password_server: RedisServer) -> None:
    for extra in ({"password": REDIS_PASSWORD},
                  {"username": REDIS_ACL_USER, "password": REDIS_ACL_PASSWORD}):
        store = RedisTicketLockStore.from_kwargs(kwargs_for(redis_password_server, **extra))
        try:
            async with store.lock(conversation()) as held:
                assert held.fencing_token > 0
        finally:
            await store.close()


async def test_tls(redis_tls_server: RedisServer) -> None:
    store = RedisTicketLockStore.from_kwargs(
        kwargs_for(redis_tls_server, use_ssl=True, ssl_ca_certs=str(redis_tls_server.ca_cert))
    )
    try:
        async with store.lock(conversation()) as held:
            assert held.fencing_token > 0
    finally:
        await store.close()


async def test_a_message_cancelled_at_any_step_of_its_draw_gives_the_ticket_back(
    make_store: StoreFactory,
) -> None:
    """Sanic cancels a handler on timeout or disconnect. Wherever that lands while a waiter
    draws its ticket (before the command is sent, after Redis issued the ticket but before the
    reply is read, while it waits its turn), the waiter must end cancelled and its ticket must
    be gone; a leaked ticket would block the conversation for the ticket's lifetime."""
    holder_store, waiter_store = make_store(), make_store()
    cid = conversation()
    async with waiter_store.lock(conversation()):  # connections up: a draw is one command
        pass
    release = asyncio.Event()

    async def holder() -> None:
        async with holder_store.lock(cid, lock_lifetime=30):
            await release.wait()

    async def waiter() -> None:
        async with waiter_store.lock(cid, lock_lifetime=30):
            pytest.fail("a cancelled waiter got the lock")

    holding = asyncio.create_task(holder())
    await wait_for_tickets(holder_store, cid, 1)
    try:
        for steps in range(12):  # event-loop steps the waiter takes before the cancellation
            task = asyncio.create_task(waiter())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=10)
            assert done, f"after {steps} steps the cancelled waiter is still running"
            assert task.cancelled(), f"after {steps} steps the waiter ended as {task!r}"
            lock = await holder_store.get_lock(cid)
            assert lock is not None and len(lock.tickets) == 1, (
                f"after {steps} steps the queue holds {lock}"
            )
    finally:
        release.set()
        await asyncio.wait_for(holding, 10)
    async with waiter_store.lock(cid, wait_time=5):  # free at once, not after 30 s
        pass


# ------------------------------------------------------------------ waiting in line
#
# A message waiting behind a holder that died is served when the dead ticket expires (its own
# lifetime counts from its turn); a waiter that died leaves the line within one waiting lease;
# a burst of waiters needs a bounded number of Redis connections; and a store's connections
# close with the event loop that made them, without anybody calling ``close()``.


async def test_a_waiter_behind_a_dead_holder_is_served_when_the_dead_ticket_expires(
    make_store: StoreFactory,
) -> None:
    # The dead holder drew its ticket a moment before the waiters (as a killed pod does) and
    # lives 1.5 s; the waiters' own lifetime is 1 s, but it counts from their turn.
    dead, survivor = make_store(), make_store()
    cid = conversation()
    issued = time.monotonic()  # the dead ticket's lifetime counts from a moment after this
    await dead.issue_ticket(cid, lock_lifetime=1.5)
    order: list[int] = []

    async def message(i: int) -> None:
        async with survivor.lock(cid, lock_lifetime=1.0):
            order.append(i)
            await asyncio.sleep(0.01)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(message(i)))
        await asyncio.sleep(0.01)  # arrival order
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert order == [0, 1, 2, 3, 4]  # none dropped, in arrival order (on a cold connection)
    # Not served before the dead ticket expired (1.5 s after it was drawn; Redis keeps time
    # in milliseconds), and served soon after it.
    assert 1.45 < time.monotonic() - issued < 6


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


async def test_tickets_are_drawn_in_arrival_order_while_a_cold_connection_dials(
    make_store: StoreFactory,
) -> None:
    # A fresh store (as after a pod start or a failover): the first callers wait for the
    # connection to be dialled, later ones arrive while it completes and after. Whatever the
    # timing, the numbers follow the order the callers came in: Rasa's arrival order.
    store = make_store()
    cid = conversation()

    async def arrive() -> int:
        return await store.issue_ticket(cid, lock_lifetime=30)

    tasks = []
    for _ in range(200):
        tasks.append(asyncio.create_task(arrive()))
        await asyncio.sleep(0)  # each caller starts before the next one arrives
    numbers = await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)  # in arrival order
    assert numbers == sorted(numbers) and len(set(numbers)) == 200
