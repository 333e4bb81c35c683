"""Holder leases on real Redis, in all three deployment modes and on both event loops.

A ticket held through ``lock()`` lives one ``lock_lease`` at a time, renewed by its holder while
the body runs, under a hard deadline of turn + ``lock_lifetime`` kept in Redis (``locks.api``
module doc). Each store below stands for another pod. Leases here are short (1-2 s) and
lifetimes long (30 s), so "freed within a lease" and "not overtaken before the lifetime" are
far apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.platform.redis_servers import RedisServer, SentinelGroup
from tests.redis import test_locks
from tests.redis.test_locks import StoreFactory, conversation, kwargs_for, wait_for_tickets
from turnstile.stores.locks import inspect
from turnstile.stores.locks.redis import RedisTicketLockStore, queue_key

make_store = test_locks.make_store  # the same fixture: standalone, Cluster, Sentinel

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0
LIFETIME = 30.0


def _loop_name() -> str:
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else \
        "asyncio"


def _renewal_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "_HolderLease._keep"]


async def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The holder's next stdout line, without blocking the event loop."""
    assert proc.stdout is not None
    return await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)


async def test_a_holder_process_killed_with_sigkill_frees_its_conversation_within_one_lease(
    make_store: StoreFactory, request: pytest.FixtureRequest
) -> None:
    mode = request.node.callspec.params["make_store"]
    fixture = {"standard": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[mode]
    kwargs = kwargs_for(request.getfixturevalue(fixture), lock_lease=LEASE,
                        lock_lifetime=LIFETIME)
    waiter_store = make_store(lock_lease=LEASE, lock_lifetime=LIFETIME)
    cid = conversation()
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, read through a thread
        [sys.executable, "-m", "tests.redis.lease_holder", json.dumps(kwargs), cid, _loop_name()],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acquired: list[float] = []
    try:
        line = await _read_line(proc, timeout=20)
        assert line.startswith("HELD "), line
        dead_token = int(line.split()[1])

        async def waiter() -> int:
            async with waiter_store.lock(cid) as held:
                acquired.append(time.monotonic())
                return held.fencing_token

        task = asyncio.create_task(waiter())
        await wait_for_tickets(waiter_store, cid, 2)
        # Longer than one lease: the live holder process must have renewed its ticket.
        await asyncio.sleep(LEASE * 1.3)
        assert not acquired, "the waiter overtook a live holder before its lock_lifetime"
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        token = await asyncio.wait_for(task, timeout=LEASE + 5)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert acquired[0] - killed <= LEASE + 1.0
    assert token > dead_token


async def test_a_live_holder_slower_than_its_lease_is_never_overtaken(
    make_store: StoreFactory,
) -> None:
    holder_store = make_store(lock_lease=LEASE, lock_lifetime=LIFETIME)
    waiter_store = make_store(lock_lease=LEASE, lock_lifetime=LIFETIME)
    cid = conversation()
    events: list[str] = []

    async def waiter() -> None:
        async with waiter_store.lock(cid):
            events.append("waiter in")

    async with holder_store.lock(cid) as held:
        task = asyncio.create_task(waiter())
        await wait_for_tickets(holder_store, cid, 2)
        await asyncio.sleep(3 * LEASE)  # three leases: renewed in the background
        assert not held.lost and not held.lost_event.is_set()
        assert len(_renewal_tasks()) == 1
        events.append("holder out")
    await asyncio.wait_for(task, timeout=10)
    assert events == ["holder out", "waiter in"]
    assert _renewal_tasks() == []  # cancelled on exit, nothing left running


async def test_a_holder_past_its_lifetime_is_overtaken_and_learns_it(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The first renewal (a third of a lease in) already meets the deadline, so the ticket
    # expires by its lifetime even if a loaded machine delays that renewal by up to 1.3 s.
    lifetime, lease = 2.5, 2 * LEASE
    holder_store = make_store(lock_lease=lease, lock_lifetime=lifetime)
    waiter_store = make_store(lock_lease=LEASE, lock_lifetime=LIFETIME)
    cid = conversation()
    overtaken_after: list[float] = []

    async def waiter(turn: float) -> int:
        async with waiter_store.lock(cid, lock_lifetime=LIFETIME) as held:
            overtaken_after.append(time.monotonic() - turn)
            return held.fencing_token

    with caplog.at_level(logging.WARNING, logger="turnstile.stores.locks"):
        async with holder_store.lock(cid) as held:
            turn = time.monotonic()
            task = asyncio.create_task(waiter(turn))
            await asyncio.wait_for(held.lost_event.wait(), timeout=lifetime + 5)
            assert held.lost
            token = await asyncio.wait_for(task, timeout=5)  # let in while the holder runs
    assert overtaken_after[0] >= lifetime - 0.1  # not before its lock_lifetime
    assert token > held.fencing_token
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # none again at the release
    assert cid in warnings[0].getMessage() and "lock_lifetime" in warnings[0].getMessage()
    assert str(held.fencing_token) in warnings[0].getMessage()


async def test_a_short_body_costs_no_extra_round_trip(redis_server: RedisServer) -> None:
    store = RedisTicketLockStore.from_kwargs(kwargs_for(redis_server, lock_lease=LEASE))
    try:
        async with store.lock(conversation()) as held:  # connection and scripts warm
            assert held.lease is not None
        client = await store.connection.client()
        await client.config_resetstat()
        for _ in range(20):
            async with store.lock(conversation()):
                pass
        stats = await client.info("commandstats")
        scripts = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha"))
        assert scripts == 40  # ISSUE and RELEASE per cycle; no RENEW
        assert _renewal_tasks() == []
    finally:
        await store.close()


async def test_the_lease_is_renewed_across_a_short_redis_stall(
    fresh_redis_server: RedisServer,
) -> None:
    """Redis frozen (SIGSTOP) for longer than a renewal interval, shorter than the lease: the
    renewal waits for it and the holder keeps its lock."""
    lease = 2.0
    stores = [RedisTicketLockStore.from_kwargs(
        kwargs_for(fresh_redis_server, lock_lease=lease, lock_lifetime=LIFETIME))
        for _ in range(2)]
    cid = conversation()
    events: list[str] = []

    async def waiter() -> None:
        async with stores[1].lock(cid):
            events.append("waiter in")

    pid = fresh_redis_server.pid
    assert pid is not None
    try:
        async with stores[0].lock(cid) as held:
            task = asyncio.create_task(waiter())
            await wait_for_tickets(stores[0], cid, 2)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(1.2)  # covers at least one renewal (every 0.67 s)
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(1.0)  # past the expiry the ticket had before the stall
            assert not held.lost
            events.append("holder out")
        await asyncio.wait_for(task, timeout=10)
        assert events == ["holder out", "waiter in"]
        client = await stores[0].connection.client()
        assert await client.exists(queue_key(cid)) == 0
    finally:
        for store in stores:
            await store.close()


async def test_show_gives_a_holder_on_a_lease_its_deadline_and_rasas_tickets_their_lifetime(
    make_store: StoreFactory,
) -> None:
    store = make_store(lock_lease=LEASE, lock_lifetime=LIFETIME)
    cid, rasa_cid = conversation(), conversation()
    async with store.lock(cid):
        view = await inspect.show(store, cid)
    holder = view.holder
    assert holder is not None and holder.deadline is not None
    assert 0 < holder.expires - view.now <= LEASE
    assert LIFETIME - 5 < holder.deadline - view.now <= LIFETIME
    assert view.as_dict()["holder"]["deadline_in"] == round(holder.deadline - view.now, 3)
    # Rasa's synchronous issue_ticket has no holder to renew it: the whole lifetime, no lease.
    await store.issue_ticket(rasa_cid)
    [ticket] = (await inspect.show(store, rasa_cid)).tickets
    assert ticket.deadline is None and ticket.expires - view.now > LIFETIME - 5
    await store.delete_lock(rasa_cid)


@pytest.mark.slow
@pytest.mark.asyncio_only  # the connection's failover path is the same on both loops
async def test_the_lease_is_renewed_on_the_new_master_after_a_sentinel_failover(
    fresh_redis_sentinel: SentinelGroup,
) -> None:
    """The master killed with -9 while a holder runs: the renewal rides the failover (the
    connection retries and finds the new master) and lands before the replicated ticket's
    lease runs out, so the holder keeps its lock and the waiter is not let in early."""
    group = fresh_redis_sentinel
    stores = [RedisTicketLockStore.from_kwargs(
        kwargs_for(group, lock_lease=10, lock_lifetime=LIFETIME)) for _ in range(2)]
    cid = conversation()
    events: list[str] = []

    async def waiter() -> None:
        async with stores[1].lock(cid):
            events.append("waiter in")

    try:
        async with stores[0].lock(cid) as held:
            task = asyncio.create_task(waiter())
            await wait_for_tickets(stores[0], cid, 2)
            await asyncio.sleep(0.5)  # replicated
            old = group.kill_master()
            await asyncio.to_thread(group.wait_for_failover, old, 30.0)
            before = (await stores[0].state(cid))[0][0].expires
            await asyncio.sleep(10 / 3 + 0.5)  # one renewal on the new master
            after = (await stores[0].state(cid))[0][0].expires
            assert after > before and not held.lost
            events.append("holder out")
        await asyncio.wait_for(task, timeout=15)
        assert events == ["holder out", "waiter in"]
    finally:
        for store in stores:
            await store.close()
