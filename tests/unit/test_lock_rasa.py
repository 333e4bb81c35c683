"""``turnstile.rasa.locks.TicketLockStore`` keeps Rasa's lock store contract.

Rasa is not installed in the test environment, so the "with Rasa" tests load the module against
stand-ins for Rasa's public classes (``rasa.core.lock.Ticket``/``TicketLock``,
``rasa.core.lock_store.LockStore``/``LockError``), shaped after Rasa 3.6 and Rasa Pro 3.21.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from turnstile.stores.errors import LockError
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.locks.redis import RedisTicketLockStore


class _Endpoint:
    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self.url = url
        self.type = kwargs.pop("type", None)
        self.kwargs = kwargs


def _fake_rasa() -> dict[str, types.ModuleType]:
    lock = types.ModuleType("rasa.core.lock")

    class Ticket:
        def __init__(self, number: int, expires: float) -> None:
            self.number, self.expires = number, expires

    class RasaTicketLock:
        def __init__(self, conversation_id: str, tickets: Any = None) -> None:
            self.conversation_id = conversation_id
            self.tickets = tickets or deque()

    lock.Ticket = Ticket  # type: ignore[attr-defined]
    lock.TicketLock = RasaTicketLock  # type: ignore[attr-defined]
    lock_store = types.ModuleType("rasa.core.lock_store")

    class RasaLockError(Exception):
        pass

    class LockStore:
        def get_lock(self, conversation_id: str) -> Any:
            raise NotImplementedError

    lock_store.LockError = RasaLockError  # type: ignore[attr-defined]
    lock_store.LockStore = LockStore  # type: ignore[attr-defined]
    return {
        "rasa": types.ModuleType("rasa"),
        "rasa.core": types.ModuleType("rasa.core"),
        "rasa.core.lock": lock,
        "rasa.core.lock_store": lock_store,
    }


_LOCKS = Path(__file__).parents[2] / "turnstile" / "rasa" / "locks.py"


def _load(name: str) -> Any:
    """Load ``turnstile/rasa/locks.py`` by path (fresh, and without ``turnstile.rasa``'s
    other imports), so each test sees the module as it imports with or without Rasa."""
    spec = importlib.util.spec_from_file_location(name, _LOCKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plain = _load("_locks_without_rasa")


@pytest.fixture
def with_rasa(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, module in _fake_rasa().items():
        monkeypatch.setitem(sys.modules, name, module)
    yield _load("_locks_with_rasa")


@pytest.mark.skipif(importlib.util.find_spec("rasa") is not None, reason="Rasa is installed")
def test_without_rasa_the_module_imports_on_a_plain_base() -> None:
    assert not plain.HAS_RASA
    assert plain.TicketLockStore.__mro__[1] is object


def test_endpoint_config_builds_the_redis_store_from_kwargs_and_url() -> None:
    store = plain.TicketLockStore(endpoint_config=_Endpoint(url="redis-host", key_prefix="b1"))
    assert isinstance(store.store, RedisTicketLockStore)
    assert store.store.settings.host == "redis-host"
    assert store.store.settings.key_prefix == "b1"


def test_without_endpoint_config_locks_stay_in_memory() -> None:
    assert isinstance(plain.TicketLockStore().store, InMemoryTicketLockStore)


async def test_lock_yields_a_ticket_lock_with_a_fencing_token() -> None:
    store = plain.TicketLockStore()
    async with store.lock("c") as lock:
        assert isinstance(lock, plain.RasaTicketLock)  # ours without Rasa, Rasa's with it
        assert lock.tickets[0].number == lock.fencing_token
    async with store.lock("c") as again:
        assert again.fencing_token > lock.fencing_token
    await store.close()


async def test_rasas_sync_methods_work_inside_a_running_loop() -> None:
    store = plain.TicketLockStore(store=InMemoryTicketLockStore(lock_lifetime=30))
    one = store.issue_ticket("c")
    two = store.issue_ticket("c")
    assert store.is_someone_waiting("c")
    lock = store.get_lock("c")
    assert [t.number for t in lock.tickets] == [one, two]
    store.finish_serving("c", one)
    store.save_lock(lock)  # puts ``one`` back
    assert [t.number for t in store.get_lock("c").tickets] == [one, two]
    store.cleanup("c", one)
    store.cleanup("c", two)
    assert store.get_lock("c") is None
    store.issue_ticket("c")
    store.delete_lock("c")
    assert not store.is_someone_waiting("c")
    await store.close()


async def test_with_rasa_it_is_a_rasa_lock_store_yielding_rasas_ticket_lock(with_rasa: Any) -> None:
    rasa_lock_store = sys.modules["rasa.core.lock_store"]
    rasa_lock = sys.modules["rasa.core.lock"]
    store = with_rasa.TicketLockStore(endpoint_config=None)
    assert isinstance(store, rasa_lock_store.LockStore)  # type: ignore[attr-defined]
    async with store.lock("c", wait_time_in_seconds=1) as lock:
        assert isinstance(lock, rasa_lock.TicketLock)  # type: ignore[attr-defined]
        assert lock.tickets[0].number == lock.fencing_token
    assert isinstance(store.get_lock("none"), type(None))
    store.issue_ticket("c")
    assert isinstance(store.get_lock("c"), rasa_lock.TicketLock)  # type: ignore[attr-defined]
    await store.close()


async def test_with_rasa_a_failed_wait_raises_rasas_lock_error(with_rasa: Any) -> None:
    rasa_error = sys.modules["rasa.core.lock_store"].LockError  # type: ignore[attr-defined]
    store = with_rasa.TicketLockStore(store=InMemoryTicketLockStore(lock_lifetime=5))
    store.issue_ticket("c", lock_lifetime=5)  # held elsewhere

    async def wait() -> None:
        async with store.lock("c"):
            pytest.fail("must not be reached")

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.05)
    await store.store.delete_lock("c")  # the lock is deleted under the waiter
    with pytest.raises(rasa_error) as info:
        await asyncio.wait_for(task, timeout=2)
    assert isinstance(info.value.__cause__, LockError)
    await store.close()


async def test_errors_from_the_body_pass_through_untranslated() -> None:
    store = plain.TicketLockStore()
    with pytest.raises(KeyError):
        async with store.lock("c"):
            raise KeyError("body")
    assert await store.store.get_lock("c") is None
    await asyncio.sleep(0)
    await store.close()
