"""``turnstile.rasa.RasaTimerManager`` and ``install()`` where Rasa Pro is not installed.

The manager's behaviour inside real Rasa Pro is proven in ``tests/rasa/test_timer_manager_pro.py``;
here: the module imports and installs nothing without Rasa (Rasa 3.6 and plain Python), and the
manager drives Turnstile's store with Rasa's callback arguments.
"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from turnstile.rasa import RasaTimerManager, TimerStore, install, installed

NO_RASA_TIMER_MANAGERS = importlib.util.find_spec("rasa") is None


@pytest.mark.skipif(not NO_RASA_TIMER_MANAGERS, reason="Rasa is importable here")
def test_without_rasa_install_changes_nothing_and_says_so() -> None:
    assert install() is False
    assert installed() is False


async def test_the_manager_fires_due_timers_with_rasas_arguments_and_keeps_pending_ones() -> None:
    store = TimerStore()  # in memory
    manager = RasaTimerManager(store, poll_interval=0.05)
    fired: list[tuple[str, str | None, float | None]] = []
    done = asyncio.Event()

    async def handle_session_timeout(sender_id, session_id, scheduled_time=None) -> None:
        fired.append((sender_id, session_id, scheduled_time))
        done.set()

    with pytest.raises(RuntimeError, match="set_callback"):
        await manager.start()
    manager.set_callback(handle_session_timeout)
    await manager.schedule_timer("due", "s1", 0, handle_session_timeout)
    await manager.schedule_timer("later", "s1", 3600, handle_session_timeout)
    scheduled = (await manager.get_timer("due")).scheduled_time
    await manager.start()
    await asyncio.wait_for(done.wait(), 10)
    assert fired == [("due", "s1", scheduled)]
    assert await manager.get_timer("later") is not None
    assert await manager.cancel_timer("later") is True
    assert await manager.cancel_timer("later") is False
    await manager.stop()
