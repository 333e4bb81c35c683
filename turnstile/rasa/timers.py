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
:class:`~turnstile.stores.timers.api.SessionTimer`. Without an endpoint config timers stay in
memory, like Rasa's default.

Rasa Pro wraps every custom timer store in its in-memory timer manager (one asyncio task per
timer on the pod that set it, nothing recovered at start, pending timers deleted on stop), so
timers would not survive a rollout or a dead pod. Run Rasa as ``turnstile-rasa run ...`` (or
call :func:`turnstile.rasa.install` before Rasa builds its agent) and Rasa gets
:class:`~turnstile.rasa.timer_manager.RasaTimerManager` instead. A store that Rasa builds
without it logs one warning saying so.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from turnstile.stores.timers.api import BaseTimerStore
from turnstile.stores.timers.api import SessionTimer as _Timer
from turnstile.stores.timers.memory import InMemoryTimerStore
from turnstile.stores.timers.redis import RedisTimerStore

try:
    from rasa.core.timer_stores.timer_store import SessionTimer as _RasaTimer
    from rasa.core.timer_stores.timer_store import SessionTimerStore as _TimerStoreBase

    HAS_RASA = True
except ImportError:  # a plain base: the module imports and works without Rasa
    _TimerStoreBase = object
    _RasaTimer = _Timer
    HAS_RASA = False

logger = logging.getLogger(__name__)

#: Set while Turnstile's timer manager factory builds the store: a manager that keeps its
#: timers alive is on the way, so the store does not warn.
_MANAGED: contextvars.ContextVar[bool] = contextvars.ContextVar("turnstile_managed", default=False)
_warned = False

UNMANAGED_WARNING = (
    "turnstile.rasa.TimerStore was built by Rasa's own timer manager factory, which wraps "
    "every custom timer store in InMemorySessionTimerManager: timers will NOT survive "
    "restarts, rollouts or a dead pod (its stop() deletes pending timers, nothing is recovered "
    "at start, and only the pod that set a timer fires it). Start Rasa with "
    "`turnstile-rasa run ...` instead of `rasa run ...`, or call turnstile.rasa.install() "
    "before Rasa builds its agent (see docs/install.md)."
)


@contextmanager
def managed_construction() -> Iterator[None]:
    """Mark stores built inside as driven by Turnstile's timer manager."""
    token = _MANAGED.set(True)
    try:
        yield
    finally:
        _MANAGED.reset(token)


def _warn_unmanaged() -> None:
    global _warned  # noqa: PLW0603 - one warning per process
    if _warned or _MANAGED.get() or not HAS_RASA:
        return
    from turnstile.rasa.launcher import installed  # noqa: PLC0415 - it imports this module

    if installed():  # built some other way, but Rasa's agent gets Turnstile's manager
        return
    _warned = True
    logger.warning(UNMANAGED_WARNING)


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
            _warn_unmanaged()

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
