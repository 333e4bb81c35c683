"""The timer manager on a fake clock (looptime): every ``sleep`` below is instant."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from turnstile.stores.errors import StoreUnavailableError
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.memory import InMemoryTimerStore

pytestmark = pytest.mark.looptime


def loop_clock() -> float:
    return asyncio.get_running_loop().time()


class Recorder:
    def __init__(self) -> None:
        self.fired: list[tuple[str, float]] = []

    async def __call__(self, timer: SessionTimer) -> None:
        self.fired.append((timer.sender_id, loop_clock()))


def manager(store, on_expired, **options) -> TimerManager:
    options.setdefault("poll_interval", 1.0)
    return TimerManager(store, on_expired, clock=loop_clock, **options)


async def test_a_timer_fires_once_within_one_poll_interval_of_its_time():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    await store.store_timer("alice", "s1", loop_clock() + 5.5)
    async with manager(store, fired):
        await asyncio.sleep(30)
    assert [sender for sender, _ in fired.fired] == ["alice"]
    (_, when), = fired.fired
    assert 5.5 <= when <= 6.5
    assert await store.get_timer("alice") is None


async def test_timers_that_expired_while_no_manager_ran_fire_during_start():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    for i in range(3):
        await store.store_timer(f"c{i}", "s", loop_clock() - 100 + i)
    m = manager(store, fired, poll_interval=60)
    await m.start()
    try:
        assert sorted(sender for sender, _ in fired.fired) == ["c0", "c1", "c2"]
    finally:
        await m.stop()


async def test_a_rescheduled_timer_fires_at_its_new_time_only():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    await store.store_timer("bob", "s", loop_clock() + 5)
    async with manager(store, fired):
        await asyncio.sleep(2)
        await store.store_timer("bob", "s", loop_clock() + 10)
        await asyncio.sleep(30)
    assert len(fired.fired) == 1
    assert fired.fired[0][1] >= 12


async def test_a_timer_from_an_earlier_session_is_dropped_not_fired():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    sessions = {"old": "s2", "same": "s1"}

    async def current_session(sender_id: str) -> str | None:
        return sessions.get(sender_id)

    await store.store_timer("old", "s1", loop_clock() - 1)
    await store.store_timer("same", "s1", loop_clock() - 1)
    await store.store_timer("nosession", None, loop_clock() - 1)
    m = manager(store, fired, current_session=current_session)
    async with m:
        await asyncio.sleep(3)
    assert sorted(sender for sender, _ in fired.fired) == ["nosession", "same"]
    assert (m.fired, m.dropped) == (2, 1)
    assert await store.get_expired_timers(loop_clock()) == []


async def test_three_managers_on_one_store_fire_each_timer_exactly_once():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    for i in range(1000):
        await store.store_timer(f"c{i}", "s", loop_clock() + (i % 10))
    managers = [manager(store, fired, max_batch=100) for _ in range(3)]
    for m in managers:
        await m.start()
    await asyncio.sleep(20)
    for m in managers:
        await m.stop()
    senders = [sender for sender, _ in fired.fired]
    assert len(senders) == 1000
    assert set(senders) == {f"c{i}" for i in range(1000)}


async def test_a_backlog_larger_than_a_batch_drains_without_waiting_for_intervals():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    for i in range(250):
        await store.store_timer(f"c{i}", "s", loop_clock() - 1)
    start = loop_clock()
    async with manager(store, fired, poll_interval=60, max_batch=100):
        await asyncio.sleep(1)
    assert len(fired.fired) == 250
    assert max(when for _, when in fired.fired) - start < 1


async def test_a_failing_callback_is_logged_and_the_loop_goes_on(caplog):
    store = InMemoryTimerStore(clock=loop_clock)
    seen: list[str] = []

    async def on_expired(timer: SessionTimer) -> None:
        seen.append(timer.sender_id)
        if timer.sender_id == "bad":
            raise RuntimeError("boom")

    await store.store_timer("bad", "s", loop_clock() + 1)
    await store.store_timer("good", "s", loop_clock() + 3)
    m = manager(store, on_expired)
    with caplog.at_level(logging.ERROR):
        async with m:
            await asyncio.sleep(10)
    assert seen == ["bad", "good"]
    assert (m.fired, m.failed) == (1, 1)
    assert "boom" in caplog.text


async def test_callbacks_run_at_most_concurrency_at_a_time():
    store = InMemoryTimerStore(clock=loop_clock)
    running, peak = 0, 0

    async def slow(timer: SessionTimer) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(5)
        running -= 1

    for i in range(20):
        await store.store_timer(f"c{i}", "s", loop_clock() - 1)
    m = manager(store, slow, concurrency=4)
    async with m:
        await asyncio.sleep(60)
    assert m.fired == 20
    assert peak == 4


async def test_stop_is_bounded_when_a_callback_hangs():
    store = InMemoryTimerStore(clock=loop_clock)
    hang = asyncio.Event()

    async def never_returns(timer: SessionTimer) -> None:
        await hang.wait()

    await store.store_timer("stuck", "s", loop_clock() + 1)
    m = manager(store, never_returns, stop_timeout=5)
    await m.start()
    await asyncio.sleep(3)
    before = loop_clock()
    await m.stop()
    assert loop_clock() - before <= 5.5
    assert not m.running


async def test_stop_wakes_a_sleeping_loop_at_once():
    store, fired = InMemoryTimerStore(clock=loop_clock), Recorder()
    m = manager(store, fired, poll_interval=3600)
    await m.start()
    before = loop_clock()
    await m.stop()
    assert loop_clock() - before < 1


class FlakyStore(InMemoryTimerStore):
    def __init__(self) -> None:
        super().__init__(clock=loop_clock)
        self.down = True

    async def get_expired_timers(self, cutoff_time=None):
        if self.down:
            raise StoreUnavailableError("redis is down")
        return await super().get_expired_timers(cutoff_time)


async def test_a_failing_store_is_logged_once_and_polled_until_it_recovers(caplog):
    store, fired = FlakyStore(), Recorder()
    await store.store_timer("late", "s", loop_clock() - 1)
    with caplog.at_level(logging.INFO):
        async with manager(store, fired):
            await asyncio.sleep(10)
            store.down = False
            await asyncio.sleep(3)
    assert [sender for sender, _ in fired.fired] == ["late"]
    assert caplog.text.count("polling failed") == 1
    assert caplog.text.count("polling works again") == 1


def test_bad_arguments_are_refused():
    store = InMemoryTimerStore()
    with pytest.raises(ValueError):
        TimerManager(store, Recorder(), poll_interval=0)
    with pytest.raises(ValueError):
        TimerManager(store, Recorder(), max_batch=0)


class LeasingStore(InMemoryTimerStore):
    """An in-memory store that says what the manager acknowledged and renewed, and when."""

    def __init__(self) -> None:
        super().__init__(clock=loop_clock)
        self.events: list[tuple[str, str]] = []

    @property
    def lease(self) -> float | None:
        return 3.0

    async def ack(self, timers) -> int:
        self.events += [("ack", t.sender_id) for t in timers]
        return len(timers)

    async def extend(self, timers) -> int:
        self.events += [("extend", t.sender_id) for t in timers]
        return len(timers)


async def test_each_timer_is_acknowledged_when_its_callback_returns_and_renewed_while_it_runs():
    store = LeasingStore()
    await store.store_timer("quick", "s", loop_clock() - 1)
    await store.store_timer("slow", "s", loop_clock() - 1)

    async def on_expired(timer: SessionTimer) -> None:
        store.events.append(("fired", timer.sender_id))
        await asyncio.sleep(5 if timer.sender_id == "slow" else 0)
        store.events.append(("returned", timer.sender_id))

    async with manager(store, on_expired, poll_interval=60):
        await asyncio.sleep(10)
    quick = [e for e in store.events if e[1] == "quick"]
    assert quick == [("fired", "quick"), ("returned", "quick"), ("ack", "quick")]
    slow = [e for e in store.events if e[1] == "slow"]
    assert slow[0] == ("fired", "slow")
    assert ("extend", "slow") in slow  # renewed every lease / 3 while the callback ran
    assert slow[-1] == ("ack", "slow")
    assert slow.index(("returned", "slow")) < slow.index(("ack", "slow"))
    assert store.events.index(("ack", "quick")) < store.events.index(("returned", "slow"))


async def test_a_failing_callback_is_acknowledged_not_retried():
    store = LeasingStore()
    await store.store_timer("bad", "s", loop_clock() - 1)

    async def on_expired(timer: SessionTimer) -> None:
        raise RuntimeError("boom")

    m = manager(store, on_expired, poll_interval=1)
    async with m:
        await asyncio.sleep(5)
    assert ("ack", "bad") in store.events
    assert m.failed == 1


async def test_a_slow_callback_delays_no_other_timer():
    """A callback that takes 30 s does not hold up the next poll: a timer due 2 s later fires
    within one interval of its time (a poll used to wait for its callbacks: 28 s late)."""
    store = InMemoryTimerStore(clock=loop_clock)
    fired: dict[str, float] = {}

    async def on_expired(timer: SessionTimer) -> None:
        fired[timer.sender_id] = loop_clock()
        if timer.sender_id == "slow":
            await asyncio.sleep(30)

    start = loop_clock()
    await store.store_timer("slow", "s", start + 0.5)
    await store.store_timer("next", "s", start + 2.5)
    async with manager(store, on_expired, poll_interval=1.0):
        await asyncio.sleep(40)
    assert set(fired) == {"slow", "next"}
    assert fired["next"] - (start + 2.5) <= 1.0 + 0.01


async def test_a_pod_with_every_slot_busy_leaves_due_timers_to_the_others():
    """Claims never exceed the free callback slots: while one manager's only slot is busy, a
    second manager on the same store fires the timers that come due."""
    store = InMemoryTimerStore(clock=loop_clock)
    where: dict[str, str] = {}

    def on(name: str, hold: float) -> Any:
        async def on_expired(timer: SessionTimer) -> None:
            where[timer.sender_id] = name
            await asyncio.sleep(hold)
        return on_expired

    start = loop_clock()
    await store.store_timer("first", "s", start + 0.5)
    busy = manager(store, on("busy", 60), concurrency=1, poll_interval=0.5)
    await busy.start()
    try:
        await asyncio.sleep(2)  # "first" is running on busy's only slot
        assert where == {"first": "busy"}
        for i in range(3):
            await store.store_timer(f"c{i}", "s", loop_clock() + 1 + i)
        async with manager(store, on("idle", 0), poll_interval=0.5):
            await asyncio.sleep(10)
    finally:
        await busy.stop()
    assert where == {"first": "busy", "c0": "idle", "c1": "idle", "c2": "idle"}
