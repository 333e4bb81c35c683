"""Turnstile's timer manager for Rasa Pro, and the factory that makes Rasa use it.

Rasa Pro 3.21 chooses its timer manager by the store's ``type``
(``rasa.core.timer_managers.timer_manager.create_timer_manager``): only its built-in
``type: redis`` gets the multi-pod polling manager. Every custom store, Turnstile's included,
is wrapped in ``InMemorySessionTimerManager``: one asyncio task per timer on the pod that set
it, nothing recovered at start, and a ``stop()`` that deletes every pending timer from the
store. Rasa has no plugin hook for timer managers, so Turnstile brings its own:

* :class:`RasaTimerManager` is a Rasa ``SessionTimerManager`` on Turnstile's store. It runs
  :class:`~turnstile.stores.timers.manager.TimerManager` (recovery at start, one batched claim
  per poll across all pods, leases acknowledged after the callback) and calls the callback
  Rasa's agent sets (``MessageProcessor.handle_session_timeout``) with Rasa's arguments
  ``(sender_id, session_id, scheduled_time)``. ``stop()`` never deletes pending timers.
* :func:`create_timer_manager` is Rasa's factory with one change: a ``timer_store`` whose
  ``type`` is :class:`~turnstile.rasa.timers.TimerStore` (or a subclass) gets
  :class:`RasaTimerManager`; anything else goes to Rasa's own factory, unchanged.
  :func:`turnstile.rasa.install` puts it where ``rasa.core.agent`` looks it up; the
  ``turnstile-rasa`` launcher does that before running Rasa's command line.

Without Rasa Pro (Rasa Open Source 3.6 has no timer stores) the module imports on a plain base
and nothing is installed.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from turnstile.rasa.timers import TimerStore, managed_construction
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.manager import TimerManager

try:
    from rasa.core.timer_managers.timer_manager import SessionTimerManager as _ManagerBase

    HAS_RASA_TIMER_MANAGERS = True
except ImportError:  # Rasa 3.6 or no Rasa: a plain base, so the module still imports
    _ManagerBase = object
    HAS_RASA_TIMER_MANAGERS = False

logger = logging.getLogger(__name__)

#: Rasa's ``TimerCallback``: ``(sender_id, session_id, scheduled_time)``.
RasaCallback = Callable[[str, str | None, float | None], Awaitable[None]]
#: Rasa's ``create_timer_manager(endpoint_config=None, callback=None)``.
Factory = Callable[..., Any]

class RasaTimerManager(_ManagerBase):  # type: ignore[misc]
    """Rasa's ``SessionTimerManager`` contract on Turnstile's store (see the module doc)."""

    def __init__(
        self,
        store: TimerStore,
        *,
        poll_interval: float | None = None,
        max_batch: int = 1000,
        concurrency: int = 32,
        stop_timeout: float = 10.0,
    ) -> None:
        if HAS_RASA_TIMER_MANAGERS:
            super().__init__(store)
        self._store = store
        inner = store.store
        settings = getattr(inner, "settings", None)
        if poll_interval is None:
            poll_interval = getattr(settings, "poll_interval", 1.0)
        self._options: dict[str, Any] = {
            "poll_interval": poll_interval, "max_batch": max_batch,
            "concurrency": concurrency, "stop_timeout": stop_timeout,
        }
        self._callback: RasaCallback | None = None
        self._manager: TimerManager | None = None

    @property
    def store(self) -> TimerStore:
        return self._store

    @property
    def poller(self) -> TimerManager | None:
        """The running poll loop (``fired``, ``failed`` counters), or ``None`` before start."""
        return self._manager

    def set_callback(self, callback: RasaCallback) -> None:
        """The callback for every timer (Rasa's agent sets ``handle_session_timeout``)."""
        self._callback = callback

    async def start(self) -> None:
        """Fire what came due while no pod ran (start-up recovery), then poll."""
        if self._callback is None:
            raise RuntimeError(
                "RasaTimerManager.start(): call set_callback() first (Rasa's agent does)"
            )
        if self._manager is not None and self._manager.running:
            return
        self._manager = TimerManager(self._store.store, self._fire, **self._options)
        await self._manager.start()

    async def stop(self) -> None:
        """Stop polling and close the store. Pending timers stay for the other pods."""
        manager, self._manager = self._manager, None
        if manager is not None:
            await manager.stop()
        await self._store.aclose()

    async def schedule_timer(
        self,
        sender_id: str,
        session_id: str | None,
        timeout_seconds: float,
        callback: RasaCallback,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Store (replace) the conversation's timer; any pod may fire it.

        As in Rasa's Redis manager, the manager's callback fires it; ``callback`` is used only
        if none was set.
        """
        if self._callback is None:
            self._callback = callback
        await self._store.store_timer(sender_id, session_id, time.time() + timeout_seconds,
                                      metadata)

    async def cancel_timer(self, sender_id: str) -> bool:
        return await self._store.delete_timer(sender_id)

    async def get_timer(self, sender_id: str) -> Any:
        return await self._store.get_timer(sender_id)

    async def _fire(self, timer: SessionTimer) -> None:
        assert self._callback is not None
        await self._callback(timer.sender_id, timer.session_id, timer.scheduled_time)


def is_turnstile_store(endpoint_config: Any) -> bool:
    """Whether an ``endpoints.yml`` ``timer_store`` section names Turnstile's store."""
    store_type = getattr(endpoint_config, "type", None)
    if not isinstance(store_type, str) or "." not in store_type:
        return False
    module_name, _, name = store_type.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return False  # Rasa's own factory reports it
    return isinstance(cls, type) and issubclass(cls, TimerStore)


def make_factory(rasa_factory: Factory) -> Factory:
    """Rasa's ``create_timer_manager`` with Turnstile's manager for Turnstile's store."""

    def create_timer_manager(
        endpoint_config: Any = None, callback: RasaCallback | None = None
    ) -> Any:
        if not is_turnstile_store(endpoint_config):
            return rasa_factory(endpoint_config, callback)
        module_name, _, name = endpoint_config.type.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name)
        with managed_construction():
            store = cls(endpoint_config=endpoint_config)
        manager = RasaTimerManager(store)
        if callback is not None:
            manager.set_callback(callback)
        return manager

    create_timer_manager.__turnstile_rasa_factory__ = rasa_factory  # type: ignore[attr-defined]
    create_timer_manager.__doc__ = (
        "Rasa's create_timer_manager, with Turnstile's manager for turnstile.rasa.TimerStore."
    )
    return create_timer_manager
