"""Rasa Pro 3.21 only: ``turnstile.rasa.TimerStore`` and Rasa Pro's stricter loaders.

Not collected under Rasa 3.6, which has no timer stores (``tests/rasa/conftest.py``).

* Legacy ``endpoints.yml``: ``read_endpoint_config`` / ``AvailableEndpoints.read_endpoints`` ->
  ``SessionTimerStore.create`` and ``create_timer_manager`` (which wraps a custom store in
  Rasa's ``InMemorySessionTimerManager``), exactly as ``rasa.core.agent`` does.
* Engine projects' ``integrations.yml``: ``apply_integration_runtime_endpoints``, whose
  validation refuses a custom ``lock_store`` / ``timer_store`` that is not a subclass of
  ``LockStore`` / ``SessionTimerStore`` (the subclass checks Rasa Pro does).

Against a real standalone (``${VAR}`` password and port), cluster and sentinel Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rasa.conftest import HAS_TIMER_STORES, Topology, require_rasa
from turnstile.rasa import TicketLockStore, TimerStore

require_rasa()
if HAS_TIMER_STORES:  # without Rasa Pro every test here is skipped or not collected (conftest)
    from rasa.core.config.available_endpoints import AvailableEndpoints
    from rasa.core.lock_store import LockStore
    from rasa.core.timer_managers.in_memory_timer_manager import InMemorySessionTimerManager
    from rasa.core.timer_managers.timer_manager import create_timer_manager
    from rasa.core.timer_stores.timer_store import SessionTimer, SessionTimerStore
    from rasa.mantle.config.runtime_endpoints import (
        apply_integration_runtime_endpoints,
        parse_lock_store,
        parse_timer_store,
    )
    from rasa.shared.exceptions import RasaException
    from rasa.utils.endpoints import read_endpoint_config

pytestmark = [pytest.mark.rasa]

LOCK_STORE = "turnstile.rasa.TicketLockStore"
TIMER_STORE = "turnstile.rasa.TimerStore"
WAIT = 20.0


def load_timer_store(path: Path) -> Any:
    return SessionTimerStore.create(read_endpoint_config(str(path), "timer_store"))


@pytest.fixture
async def timer_stores(
    topology: Topology, endpoints_file: Callable[..., Path]
) -> AsyncIterator[Callable[[], Any]]:
    """``make()`` builds one more timer store ("pod") from the same ``endpoints.yml``."""
    path = endpoints_file(timer_store=topology.section(TIMER_STORE))
    made: list[Any] = []

    def make() -> Any:
        store = load_timer_store(path)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


# ---- loading ---------------------------------------------------------------------------------


async def test_rasa_factory_builds_the_timer_store(timer_stores: Callable[[], Any]) -> None:
    store = timer_stores()
    assert type(store) is TimerStore
    assert isinstance(store, SessionTimerStore)
    assert SessionTimerStore.create(store) is store  # a ready instance passes through
    await store.store_timer("factory", "s", time.time() + 60)  # and it reaches Redis
    timer = await store.get_timer("factory")
    assert isinstance(timer, SessionTimer)
    assert await store.delete_timer("factory") is True


def test_rasa_pro_subclass_checks_accept_turnstile_and_refuse_others() -> None:
    """``integrations.yml`` validation imports ``type`` and requires Rasa's base classes."""
    assert parse_lock_store({"type": LOCK_STORE, "host": "localhost"}).type == LOCK_STORE
    assert parse_timer_store({"type": TIMER_STORE, "host": "localhost"}).type == TIMER_STORE
    # The checks are live: a real class of the wrong kind is refused, each way round.
    with pytest.raises(RasaException, match="must be a subclass of 'SessionTimerStore'"):
        parse_timer_store({"type": LOCK_STORE})
    with pytest.raises(RasaException, match="must be a subclass of 'LockStore'"):
        parse_lock_store({"type": TIMER_STORE})
    with pytest.raises(RasaException, match="must be a subclass of 'LockStore'"):
        parse_lock_store({"type": "collections.OrderedDict"})


async def _use(lock_store: Any, timer_manager: Any, timer_reader: Any) -> None:
    """What the agent does with both: lock a conversation, schedule its inactivity timer."""
    fired: list[tuple[str, str | None, float | None]] = []
    done = asyncio.Event()

    async def on_timeout(sender_id: str, session_id: str | None, at: float | None) -> None:
        fired.append((sender_id, session_id, at))
        done.set()

    await timer_manager.start()
    try:
        async with lock_store.lock("agent-conv"):
            await timer_manager.schedule_timer("agent-conv", "session-1", 0.3, on_timeout)
        await asyncio.wait_for(done.wait(), WAIT)
        assert [(s, i) for s, i, _ in fired] == [("agent-conv", "session-1")]
        assert await timer_reader.get_timer("agent-conv") is None  # claimed and deleted
    finally:
        await timer_manager.stop()
        await lock_store.close()


async def test_agent_loading_from_endpoints_yml(
    topology: Topology, endpoints_file: Callable[..., Path], timer_stores: Callable[[], Any]
) -> None:
    """``AvailableEndpoints.read_endpoints`` then ``rasa.core.agent``'s two factory calls."""

    path = endpoints_file(
        lock_store=topology.section(LOCK_STORE), timer_store=topology.section(TIMER_STORE)
    )
    endpoints = AvailableEndpoints.read_endpoints(path)
    lock_store = LockStore.create(endpoints.lock_store)
    timer_manager = create_timer_manager(endpoints.timer_store)
    assert type(lock_store) is TicketLockStore
    assert type(timer_manager) is InMemorySessionTimerManager
    assert type(timer_manager.store) is TimerStore
    await _use(lock_store, timer_manager, timer_stores())


async def test_engine_loading_from_integrations_yml(
    topology: Topology, tmp_path: Path, timer_stores: Callable[[], Any]
) -> None:
    """Engine projects: ``integrations.yml`` (validated, ``${VAR}`` expanded) overlays the
    endpoints; the same factories then build the stores."""

    (tmp_path / "integrations.yml").write_text(
        f"lock_store:\n{topology.section(LOCK_STORE)}\n"
        f"timer_store:\n{topology.section(TIMER_STORE)}\n"
    )
    endpoints = AvailableEndpoints()
    apply_integration_runtime_endpoints(endpoints, tmp_path)
    assert endpoints.lock_store.type == LOCK_STORE
    assert endpoints.timer_store.type == TIMER_STORE
    lock_store = LockStore.create(endpoints.lock_store)
    timer_manager = create_timer_manager(endpoints.timer_store)
    assert type(lock_store) is TicketLockStore
    assert type(timer_manager.store) is TimerStore
    await _use(lock_store, timer_manager, timer_stores())


# ---- the SessionTimerStore contract ----------------------------------------------------------


async def test_timer_contract(timer_stores: Callable[[], Any]) -> None:
    store = timer_stores()
    now = time.time()
    due_at = now - 5.123456789  # not representable in few digits: round trips must be exact
    later = now + 3600.987654321
    meta = {"channel": "rest", "nested": {"n": [1, 2.5, None, True]}, "text": "héllo"}

    assert await store.get_timer("a") is None
    assert await store.delete_timer("a") is False
    await store.store_timer("a", "sess-a", due_at, meta)
    await store.store_timer("b", None, later)
    await store.store_timer("c", "sess-c", due_at - 1)

    a = await store.get_timer("a")
    assert isinstance(a, SessionTimer)
    assert a == SessionTimer.create_timer("a", "sess-a", due_at, meta)
    assert (await store.get_timer("b")) == SessionTimer.create_timer("b", None, later)

    expired = await store.get_expired_timers()  # cutoff None: now
    assert all(isinstance(t, SessionTimer) for t in expired)
    assert {t.sender_id for t in expired} >= {"a", "c"}
    assert "b" not in {t.sender_id for t in expired}
    assert {t.sender_id for t in await store.get_expired_timers(due_at)} >= {"a", "c"}
    assert "a" not in {t.sender_id for t in await store.get_expired_timers(due_at - 0.5)}
    # get_expired_timers never deletes
    assert await store.get_timer("a") is not None

    # store_timer replaces the conversation's timer
    await store.store_timer("c", "sess-c2", later, {"v": 2})
    assert await store.get_timer("c") == SessionTimer.create_timer("c", "sess-c2", later, {"v": 2})
    assert "c" not in {t.sender_id for t in await store.get_expired_timers()}

    # delete_timer(only_if_scheduled_time=...): the atomic claim
    assert await store.delete_timer("a", only_if_scheduled_time=due_at + 1e-6) is False
    assert await store.get_timer("a") is not None
    assert await store.delete_timer("a", only_if_scheduled_time=a.scheduled_time) is True
    assert await store.get_timer("a") is None
    assert await store.delete_timer("a", only_if_scheduled_time=a.scheduled_time) is False
    # unconditional delete
    assert await store.delete_timer("b") is True
    assert await store.delete_timer("b") is False
    assert await store.delete_timer("c") is True


async def test_each_expired_timer_is_claimed_by_exactly_one_pod(
    timer_stores: Callable[[], Any],
) -> None:
    pods = [timer_stores() for _ in range(3)]
    at = time.time() - 1
    senders = [f"claim{i}" for i in range(10)]
    for i, sender in enumerate(senders):
        await pods[i % 3].store_timer(sender, f"s{i}", at + i / 1000)

    async def claim(pod: Any) -> list[str]:
        won = []
        for timer in await pod.get_expired_timers():
            if timer.sender_id in senders and await pod.delete_timer(
                timer.sender_id, only_if_scheduled_time=timer.scheduled_time
            ):
                won.append(timer.sender_id)
        return won

    results = await asyncio.wait_for(asyncio.gather(*(claim(p) for p in pods)), WAIT)
    claimed = [s for won in results for s in won]
    assert sorted(claimed) == sorted(senders)  # every timer once, none twice


async def test_rasa_timer_manager_persists_fires_once_and_cancels(
    topology: Topology, endpoints_file: Callable[..., Path], timer_stores: Callable[[], Any]
) -> None:
    """Rasa's own manager around Turnstile's store; another pod sees what it persists."""
    path = endpoints_file(timer_store=topology.section(TIMER_STORE))
    manager = create_timer_manager(read_endpoint_config(str(path), "timer_store"))
    other_pod = timer_stores()
    fired: list[tuple[str, str | None, float | None]] = []
    fired_once = asyncio.Event()

    async def on_timeout(sender_id: str, session_id: str | None, at: float | None) -> None:
        fired.append((sender_id, session_id, at))
        fired_once.set()

    await manager.start()
    try:
        await manager.schedule_timer("fire", "s1", 0.5, on_timeout, {"k": "v"})
        await manager.schedule_timer("cancel", "s2", 30, on_timeout)
        await manager.schedule_timer("reset", "s3", 30, on_timeout)
        await manager.schedule_timer("reset", "s3", 60, on_timeout)  # replaces the first

        persisted = await other_pod.get_timer("fire")
        assert persisted is not None and persisted.session_id == "s1"
        assert persisted.metadata == {"k": "v"}
        assert (await other_pod.get_timer("reset")).scheduled_time > time.time() + 45

        assert await manager.cancel_timer("cancel") is True
        assert await other_pod.get_timer("cancel") is None

        await asyncio.wait_for(fired_once.wait(), WAIT)
        await asyncio.sleep(0.3)
        assert [(s, i) for s, i, _ in fired] == [("fire", "s1")]
        assert fired[0][2] == persisted.scheduled_time
        assert await other_pod.get_timer("fire") is None
    finally:
        await manager.stop()  # cancels the rest, deletes their timers, calls store.close()
    assert await other_pod.get_timer("reset") is None
