"""The lock adapter against the real Rasa (``make test-rasa`` runs it in the Rasa venvs)."""

from __future__ import annotations

import asyncio

import pytest

from tests.rasa.conftest import RASA_VERSION, require_rasa
from turnstile.rasa.locks import HAS_RASA, TicketLockStore
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.locks.redis import RedisTicketLockStore

require_rasa()
if RASA_VERSION is not None:  # without Rasa every test here is skipped, loudly (conftest.py)
    import rasa.core.lock as rasa_lock
    import rasa.core.lock_store as rasa_lock_store
    import rasa.utils.endpoints as rasa_endpoints

pytestmark = pytest.mark.rasa


def test_rasa_loads_it_from_endpoints_yml_keys() -> None:
    config = rasa_endpoints.EndpointConfig(
        url="redis-host",
        type="turnstile.rasa.locks.TicketLockStore",
        key_prefix="bot1",
        deployment_mode="standard",
        db=2,
    )
    store = rasa_lock_store.LockStore.create(config)
    assert HAS_RASA
    assert isinstance(store, TicketLockStore)
    assert isinstance(store, rasa_lock_store.LockStore)
    assert isinstance(store.store, RedisTicketLockStore)
    assert (store.store.settings.host, store.store.settings.db) == ("redis-host", 2)


async def test_lock_yields_rasas_ticket_lock_and_serialises_tasks() -> None:
    store = TicketLockStore(store=InMemoryTicketLockStore(lock_lifetime=30))
    inside, most = 0, 0

    async def handle() -> None:
        nonlocal inside, most
        async with store.lock("c", wait_time_in_seconds=1) as lock:
            assert isinstance(lock, rasa_lock.TicketLock)
            assert not lock.is_locked(lock.fencing_token)
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.002)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(handle() for _ in range(10))), timeout=10)
    assert most == 1
    await store.close()


async def test_a_failed_wait_raises_rasas_lock_error() -> None:
    store = TicketLockStore(store=InMemoryTicketLockStore(lock_lifetime=5))
    store.issue_ticket("c", 5)  # held elsewhere

    async def wait() -> None:
        async with store.lock("c"):
            pytest.fail("must not be reached")

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.05)
    store.delete_lock("c")  # deleted under the waiter
    with pytest.raises(rasa_lock_store.LockError):
        await asyncio.wait_for(task, timeout=2)
    await store.close()


async def test_rasas_sync_methods_return_rasas_types() -> None:
    store = TicketLockStore(store=InMemoryTicketLockStore(lock_lifetime=30))
    number = store.issue_ticket("c")
    lock = store.get_lock("c")
    assert isinstance(lock, rasa_lock.TicketLock)
    assert lock.now_serving == number
    assert store.is_someone_waiting("c")
    store.save_lock(lock)
    store.cleanup("c", number)
    assert store.get_lock("c") is None
    await store.close()
