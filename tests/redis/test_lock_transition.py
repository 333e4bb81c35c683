"""Turnstile -> Turnstile with other settings, on real Redis in all three modes.

Old pods are plain ``RedisTicketLockStore`` instances with the old settings (another key prefix,
or another Redis); new pods are built from a ``lock_store`` section with ``transition_from``
and ``transition_until`` (``build_lock_store``, what the drop-in class calls). Every holder
records when it held; any overlapping pair fails, named.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from tests.platform.redis_servers import RedisServer, store_kwargs
from turnstile.stores.errors import LockTimeoutError
from turnstile.stores.locks import rasa_protocols
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.locks.transition import TransitionTicketLockStore, build_lock_store

pytestmark = pytest.mark.redis

MODES = ("standard", "cluster", "sentinel")
TURNSTILE = "turnstile.rasa.TicketLockStore"


@pytest.fixture(params=MODES)
def topology(request: pytest.FixtureRequest) -> Any:
    fixture = {"standard": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[request.param]
    return request.getfixturevalue(fixture)


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    stores: list[Any] = []

    def keep(store: Any) -> Any:
        stores.append(store)
        return store

    yield keep
    for store in stores:
        await store.close()


def sections(
    old_topology: Any, new_topology: Any, until: float | str = "2099-01-01T00:00:00Z"
) -> tuple[dict[str, Any], dict[str, Any]]:
    old = store_kwargs(old_topology, db=0, key_prefix="old" + uuid.uuid4().hex[:8])
    new = store_kwargs(new_topology, db=0, key_prefix="new" + uuid.uuid4().hex[:8])
    new.update(transition_from={"type": TURNSTILE, **old}, transition_until=until)
    return old, new


class Holders:
    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    async def hold(self, store: Any, who: str, cid: str) -> None:
        async with store.lock(cid, lock_lifetime=10, wait_time=20):
            start = time.monotonic()
            await asyncio.sleep(0.003)
            self.spans.append((who, start, time.monotonic()))

    def overlaps(self) -> list[tuple[str, str]]:
        spans = sorted(self.spans, key=lambda s: s[1])
        return [
            (a, b) for i, (a, _, a1) in enumerate(spans) for b, b0, _ in spans[i + 1:] if b0 < a1
        ]


async def twenty_messages(old: dict[str, Any], new: dict[str, Any], keep: Any) -> Holders:
    olds = [keep(RedisTicketLockStore.from_kwargs(old)) for _ in range(2)]
    news = [keep(build_lock_store(new)) for _ in range(2)]
    assert all(isinstance(s, TransitionTicketLockStore) and s.in_transition for s in news)
    holders = Holders()
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    await asyncio.gather(*(
        holders.hold((olds if i % 2 else news)[i // 2 % 2], f"{'old' if i % 2 else 'new'}:{i}", cid)
        for i in range(20)
    ))
    return holders


async def test_twenty_messages_over_old_and_new_pods_with_another_prefix_never_overlap(
    topology: Any, closing: Any
) -> None:
    old, new = sections(topology, topology)
    holders = await twenty_messages(old, new, closing)
    assert len(holders.spans) == 20
    assert holders.overlaps() == []


async def test_moving_to_another_redis_then_the_old_one_gets_no_command_after_the_end(
    topology: Any, fresh_redis_server: RedisServer, closing: Any
) -> None:
    until = time.time() + 1.5
    old, new = sections(fresh_redis_server, topology, until=until)
    holders = await twenty_messages(old, new, closing)
    assert len(holders.spans) == 20
    assert holders.overlaps() == []
    assert "cmdstat_eval" in fresh_redis_server.info("commandstats") or (
        "cmdstat_evalsha" in fresh_redis_server.info("commandstats")
    )
    pod = closing(build_lock_store(new))
    await asyncio.sleep(max(until - time.time(), 0) + 0.05)
    fresh_redis_server.execute("CONFIG", "RESETSTAT")
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    for _ in range(5):
        async with pod.lock(cid):
            pass
    commands = [k for k in fresh_redis_server.info("commandstats") if k.startswith("cmdstat_")]
    assert all(c.startswith(("cmdstat_info", "cmdstat_config")) for c in commands), commands


async def test_a_dead_old_pods_ticket_still_expires_for_a_new_pod(
    topology: Any, closing: Any
) -> None:
    old, new = sections(topology, topology)
    dead = closing(RedisTicketLockStore.from_kwargs(old))
    pod = closing(build_lock_store(new))
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    await dead.issue_ticket(cid, 1.0)  # drawn, never returned: the pod died
    started = time.monotonic()
    async with pod.lock(cid, wait_time=10):
        waited = time.monotonic() - started
    assert 0.5 <= waited <= 1.0 + 1.0


async def test_cancelled_waiter_and_holder_in_transition_give_both_tickets_back(
    topology: Any, closing: Any
) -> None:
    old, new = sections(topology, topology)
    old_pod = closing(RedisTicketLockStore.from_kwargs(old))
    pods = [closing(build_lock_store(new)) for _ in range(2)]
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    entered = asyncio.Event()

    async def holder() -> None:
        async with pods[0].lock(cid, lock_lifetime=30):
            entered.set()
            await asyncio.sleep(30)

    async def waiter() -> None:
        async with pods[1].lock(cid, lock_lifetime=30):
            raise AssertionError("the waiter must not get in while the holder holds")

    holding = asyncio.create_task(holder())
    await asyncio.wait_for(entered.wait(), 10)
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.2)  # it waits in the previous store, behind the holder
    for task in (waiting, holding):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Neither ticket is left to expire: an old pod and a new pod get in at once.
    async with old_pod.lock(cid, lock_lifetime=30, wait_time=3):
        pass
    async with pods[1].lock(cid, lock_lifetime=30, wait_time=3):
        pass


@pytest.mark.parametrize("store_type", ["concurrent_redis", "redis"])
async def test_new_pods_in_transition_from_rasas_stores_exclude_each_other_and_time_out(
    redis_server: RedisServer, store_type: str, closing: Any
) -> None:
    """New pods alone, on both loops, standalone (old pods are Rasa's real classes, in every
    mode: tests/rasa/test_transition_rasa.py)."""
    topology = redis_server
    old, new = sections(topology, topology)
    new["transition_from"] = {**old, "type": store_type}
    pods = [closing(build_lock_store(new)) for _ in range(2)]
    holders = Holders()
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    await asyncio.gather(*(holders.hold(pods[i % 2], f"new:{i}", cid) for i in range(10)))
    assert len(holders.spans) == 10
    assert holders.overlaps() == []
    async with pods[0].lock(cid, lock_lifetime=10):
        with pytest.raises(LockTimeoutError):
            async with pods[1].lock(cid, lock_lifetime=10, wait_time=0.3):
                pass
    # The timed-out waiter left nothing behind: the conversation is free at once.
    async with pods[1].lock(cid, lock_lifetime=10, wait_time=1):
        pass


async def test_new_pods_drawing_the_same_expires_in_rasas_document_still_take_turns(
    redis_server: RedisServer, closing: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new pod knows its ticket in Rasa's ``redis`` document by the ``expires`` text it drew.
    Two pods drawing in the same clock tick with the same random nudge once drew one text for
    two tickets: each pod then rewrote both to its own number and neither ever reached the head
    until they expired (a CI run lost 10 messages that way). Here every draw gets the same
    clock and the same nudge: the script must refuse a text another ticket carries."""
    monkeypatch.setattr(rasa_protocols, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    monkeypatch.setattr(rasa_protocols, "random",
                        SimpleNamespace(randint=lambda a, b: a, uniform=random.uniform))
    old, new = sections(redis_server, redis_server)
    new["transition_from"] = {**old, "type": "redis"}
    pods = [closing(build_lock_store(new)) for _ in range(2)]
    holders = Holders()
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    await asyncio.wait_for(
        asyncio.gather(*(holders.hold(pods[i % 2], f"new:{i}", cid) for i in range(10))), 15)
    assert len(holders.spans) == 10
    assert holders.overlaps() == []
