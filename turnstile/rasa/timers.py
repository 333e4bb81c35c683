"""``turnstile.rasa.TimerStore``: the timer store Rasa Pro loads from ``endpoints.yml``.

::

    timer_store:
      type: turnstile.rasa.TimerStore
      host: redis          # or deployment_mode: cluster|sentinel with endpoints: [...]
      key_prefix: bot1
      buckets: 64          # optional; the same on every pod

Rasa builds it as ``TimerStore(endpoint_config=...)`` with the section's keys in
``endpoint_config.kwargs``, and requires a subclass of
``rasa.core.timer_stores.timer_store.SessionTimerStore``; when Rasa is importable this class is
one and returns Rasa's ``SessionTimer`` (built with ``SessionTimer.create_timer``). Without Rasa
the module still imports, on a plain base, and returns Turnstile's
:class:`~turnstile.stores.timers.SessionTimer`. Without an endpoint config timers stay in
memory, like Rasa's default.

Rasa wraps a custom timer store in its in-memory timer manager (one asyncio task per timer on
the pod that set it); the store still persists every timer, survives Redis outages and offers
the atomic claim, and services outside Rasa get the multi-pod poll loop from
:class:`~turnstile.stores.timer_manager.TimerManager`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from turnstile.stores.timer_redis import RedisTimerStore
from turnstile.stores.timers import BaseTimerStore, InMemoryTimerStore
from turnstile.stores.timers import SessionTimer as _Timer

try:
    from rasa.core.timer_stores.timer_store import SessionTimer as _RasaTimer
    from rasa.core.timer_stores.timer_store import SessionTimerStore as _TimerStoreBase

    HAS_RASA = True
except ImportError:  # a plain base: the module imports and works without Rasa
    _TimerStoreBase = object
    _RasaTimer = _Timer
    HAS_RASA = False


class TimerStore(_TimerStoreBase):  # type: ignore[misc]
    """Rasa's ``SessionTimerStore`` contract on Turnstile's timer store (see the module doc)."""

    def __init__(
        self, endpoint_config: Any = None, *, store: BaseTimerStore | None = None
    ) -> None:
        if store is not None:
            self.store = store
        elif endpoint_config is None:
            self.store = InMemoryTimerStore()
        else:
            self.store = RedisTimerStore.from_kwargs(
                getattr(endpoint_config, "kwargs", None) or {},
                url=getattr(endpoint_config, "url", None),
            )

    def close(self) -> None:
        """Rasa's synchronous close: schedules the store's ``aclose`` on the running loop."""
        self.store.close()

    async def aclose(self) -> None:
        await self.store.aclose()

    async def store_timer(
        self,
        sender_id: str,
        session_id: str | None,
        scheduled_time: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        await self.store.store_timer(sender_id, session_id, scheduled_time, metadata)

    async def delete_timer(
        self, sender_id: str, only_if_scheduled_time: float | None = None
    ) -> bool:
        return await self.store.delete_timer(sender_id, only_if_scheduled_time)

    async def get_timer(self, sender_id: str) -> Any:
        timer = await self.store.get_timer(sender_id)
        return None if timer is None else _to_rasa(timer)

    async def get_expired_timers(self, cutoff_time: float | None = None) -> list[Any]:
        return [_to_rasa(t) for t in await self.store.get_expired_timers(cutoff_time)]


def _to_rasa(timer: _Timer) -> Any:
    return _RasaTimer.create_timer(
        timer.sender_id, timer.session_id, timer.scheduled_time, dict(timer.metadata)
    )
