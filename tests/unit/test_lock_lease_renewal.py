"""The holder's lease renewal (``locks.api._HolderLease``) against scripted renewal replies.

The store is the in-memory one with leases switched on and its ``_renew`` replaced by a script
of replies and errors, so each way a renewal can go is exercised without Redis, on a fake clock
(looptime: every sleep is instant): transient errors retried within the lease, a lease that runs
out while Redis fails, a ticket found gone or overtaken, a cancelled holder. The real thing, on
real Redis and both event loops, is tests/redis/test_lock_lease.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from turnstile.stores.errors import StoreUnavailableError
from turnstile.stores.locks.api import Renewal
from turnstile.stores.locks.memory import InMemoryTicketLockStore

pytestmark = pytest.mark.looptime

LEASE = 0.6  # renewals every 0.2 s


class ScriptedStore(InMemoryTicketLockStore):
    """Leases on; each renewal takes the next step of ``steps`` (an exception is raised)."""

    renews_holders = True

    def __init__(self, steps: Callable[[int], Renewal | Exception]) -> None:
        super().__init__(lock_lifetime=30, lock_lease=LEASE,
                         clock=lambda: asyncio.get_running_loop().time())
        self.steps = steps
        self.calls = 0

    async def _renew(self, conversation_id: str, ticket_id: str, lease: float,
                     **restore: object) -> Renewal:
        self.calls += 1
        step = self.steps(self.calls)
        if isinstance(step, Exception):
            raise step
        return step


def renewed() -> Renewal:
    return Renewal(0, LEASE, 20.0)


def keeps(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_transient_errors_are_retried_within_the_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = StoreUnavailableError("Redis is failing over")
    store = ScriptedStore(lambda n: down if n in (1, 2) else renewed())
    with caplog.at_level(logging.WARNING):
        async with store.lock("c") as held:
            await asyncio.sleep(3 * LEASE)
            assert not held.lost
    assert store.calls >= 4  # two failures, then renewals every third of a lease
    assert keeps(caplog) == []


async def test_a_lease_that_cannot_be_renewed_before_it_runs_out_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ScriptedStore(lambda n: StoreUnavailableError("Redis is down"))
    with caplog.at_level(logging.WARNING):
        async with store.lock("conv-down") as held:
            await asyncio.wait_for(held.lost_event.wait(), timeout=3 * LEASE)
            assert held.lost
            await asyncio.sleep(0.05)  # the body goes on; nothing is raised into it
    [warning] = keeps(caplog)  # and the release does not warn a second time
    assert "conv-down" in warning and "could not be renewed" in warning
    assert str(held.fencing_token) in warning


@pytest.mark.parametrize(("position", "why"), [(-1, "was gone"), (1, "no longer at the head")])
async def test_a_renewal_that_finds_the_ticket_gone_or_overtaken_marks_it_lost(
    caplog: pytest.LogCaptureFixture, position: int, why: str
) -> None:
    store = ScriptedStore(lambda n: Renewal(position, 0.0, 0.0))
    with caplog.at_level(logging.WARNING):
        async with store.lock("conv-lost") as held:
            await asyncio.wait_for(held.lost_event.wait(), timeout=2 * LEASE)
    assert store.calls == 1  # no renewal after the loss
    [warning] = keeps(caplog)
    assert "conv-lost" in warning and why in warning


async def test_a_cancelled_holder_leaves_no_renewal_running() -> None:
    store = ScriptedStore(lambda n: renewed())
    entered = asyncio.Event()

    async def body() -> None:
        async with store.lock("c"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(body())
    await entered.wait()
    await asyncio.sleep(LEASE)  # renewing by now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "_HolderLease._keep"] == []
    assert await store.get_lock("c") is None
    calls = store.calls
    await asyncio.sleep(LEASE)
    assert store.calls == calls


async def test_each_holder_renews_a_third_of_a_lease_after_its_turn_and_short_ones_never() -> None:
    loop = asyncio.get_running_loop()
    first: dict[str, float] = {}
    store = ScriptedStore(lambda n: renewed())
    scripted = store._renew

    async def renew(conversation_id: str, ticket_id: str, lease: float,
                    **restore: object) -> Renewal:
        first.setdefault(conversation_id, loop.time() - start)
        return await scripted(conversation_id, ticket_id, lease)

    store._renew = renew  # type: ignore[method-assign]
    start = loop.time()

    async def hold(cid: str, enter: float, seconds: float) -> None:
        await asyncio.sleep(enter)
        async with store.lock(cid):
            await asyncio.sleep(seconds)

    await asyncio.gather(hold("a", 0, 0.1), hold("b", 0.05, 1.0), hold("c", 0.15, 0.15),
                         hold("d", 0.3, 1.0))
    assert set(first) == {"b", "d"}  # a and c left within a third of a lease
    assert first["b"] == pytest.approx(0.05 + LEASE / 3, abs=0.01)
    assert first["d"] == pytest.approx(0.3 + LEASE / 3, abs=0.01)
