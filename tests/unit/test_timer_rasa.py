"""``turnstile.rasa.TimerStore`` as Rasa Pro builds and calls it.

Rasa Pro is not installed in the test environment (it pins half of PyPI); a stand-in with the
same module path and the same public names as ``rasa.core.timer_stores.timer_store`` shows that
the adapter subclasses Rasa's base and returns Rasa's ``SessionTimer`` when Rasa is importable.
"""

from __future__ import annotations

import importlib
import sys
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import pytest

import turnstile.rasa
import turnstile.rasa.timers as adapter
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.timers.memory import InMemoryTimerStore
from turnstile.stores.timers.redis import RedisTimerStore


class EndpointConfig:
    """Rasa's ``EndpointConfig`` as far as a custom store sees it."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self.url = url
        self.type = kwargs.pop("store_type", kwargs.pop("type", None))
        self.kwargs = kwargs


@dataclass
class FakeRasaSessionTimer:
    sender_id: str
    session_id: str | None
    scheduled_time: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create_timer(cls, sender_id, session_id, scheduled_time, metadata=None):
        return cls(sender_id, session_id, scheduled_time, metadata or {})


class FakeSessionTimerStore(ABC):
    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    async def store_timer(self, sender_id, session_id, scheduled_time, metadata=None): ...

    @abstractmethod
    async def delete_timer(self, sender_id, only_if_scheduled_time=None): ...

    @abstractmethod
    async def get_timer(self, sender_id): ...

    @abstractmethod
    async def get_expired_timers(self, cutoff_time=None): ...


@pytest.fixture
def with_rasa(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType("rasa.core.timer_stores.timer_store")
    module.SessionTimer = FakeRasaSessionTimer  # type: ignore[attr-defined]
    module.SessionTimerStore = FakeSessionTimerStore  # type: ignore[attr-defined]
    for name in ("rasa", "rasa.core", "rasa.core.timer_stores"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "rasa.core.timer_stores.timer_store", module)
    reloaded = importlib.reload(adapter)
    yield reloaded
    monkeypatch.undo()
    importlib.reload(adapter)


def test_the_class_rasa_loads_is_exported_by_turnstile_rasa():
    cls = turnstile.rasa.TimerStore
    assert (cls.__module__, cls.__qualname__) == ("turnstile.rasa.timers", "TimerStore")


def test_with_rasa_it_is_a_session_timer_store_returning_rasas_timers(with_rasa):
    assert with_rasa.HAS_RASA
    assert issubclass(with_rasa.TimerStore, FakeSessionTimerStore)


async def test_with_rasa_timers_come_back_as_rasa_session_timers(with_rasa):
    store = with_rasa.TimerStore(endpoint_config=None)
    await store.store_timer("alice", "s1", 5.0, {"k": 1})
    timer = await store.get_timer("alice")
    assert timer == FakeRasaSessionTimer("alice", "s1", 5.0, {"k": 1})
    assert await store.get_expired_timers(10.0) == [timer]
    assert await store.delete_timer("alice", only_if_scheduled_time=5.0) is True
    assert await store.get_timer("alice") is None
    store.close()


@pytest.mark.skipif(adapter.HAS_RASA, reason="Rasa is installed in this interpreter")
def test_without_rasa_the_module_imports_on_a_plain_base():
    assert not adapter.HAS_RASA
    assert adapter.TimerStore.__mro__[1] is object


def test_without_an_endpoint_config_timers_stay_in_memory():
    assert isinstance(adapter.TimerStore().store, InMemoryTimerStore)


def test_endpoint_config_kwargs_configure_the_redis_store():
    config = EndpointConfig(
        type="turnstile.rasa.TimerStore", host="redis.svc", port="6380", buckets=16,
        key_prefix="bot1",
    )
    store = adapter.TimerStore(endpoint_config=config)
    assert isinstance(store.store, RedisTimerStore)
    assert store.store.settings.redis.host == "redis.svc"
    assert store.store.settings.redis.port == 6380
    assert store.store.settings.buckets == 16
    assert store.store.keys.of("x").due.startswith("bot1:")


def test_rasas_deprecated_url_is_read_as_the_host():
    store = adapter.TimerStore(endpoint_config=EndpointConfig(url="redis.example"))
    assert store.store.settings.redis.host == "redis.example"


def test_bad_settings_fail_when_rasa_builds_the_store():
    with pytest.raises(ConfigurationError, match=r"timer_store\.buckets"):
        adapter.TimerStore(endpoint_config=EndpointConfig(buckets=-1))


async def test_sync_close_inside_a_running_loop_closes_the_store():
    store = adapter.TimerStore(endpoint_config=EndpointConfig(host="127.0.0.1", port=1))
    store.close()
    await store.aclose()
    assert store.store._conn._closed
