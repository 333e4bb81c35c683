"""The in-memory timer store: one process, lost on restart; Rasa's default, the Redis fallback."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from turnstile.stores.timers.api import BaseTimerStore, Clock, SessionTimer


class InMemoryTimerStore(BaseTimerStore):
    """Timers in a dict: one process, lost on restart. Rasa's default, and the Redis fallback."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._timers: dict[str, SessionTimer] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._timers)

    async def store_timer(
        self,
        sender_id: str,
        session_id: str | None,
        scheduled_time: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._timers[sender_id] = SessionTimer.create_timer(
            sender_id, session_id, scheduled_time, metadata
        )

    async def delete_timer(
        self, sender_id: str, only_if_scheduled_time: float | None = None
    ) -> bool:
        timer = self._timers.get(sender_id)
        if timer is None:
            return False
        if only_if_scheduled_time is not None and timer.scheduled_time != only_if_scheduled_time:
            return False
        del self._timers[sender_id]
        return True

    async def get_timer(self, sender_id: str) -> SessionTimer | None:
        return self._timers.get(sender_id)

    async def get_expired_timers(self, cutoff_time: float | None = None) -> list[SessionTimer]:
        cutoff = self._clock() if cutoff_time is None else cutoff_time
        return [t for t in self._timers.values() if t.scheduled_time <= cutoff]

    async def aclose(self) -> None:
        self._timers.clear()

    def close(self) -> None:
        self._timers.clear()
