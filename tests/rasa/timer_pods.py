"""Rasa pods' timer side, in this process or as a real process that a test can kill with -9.

A pod is what ``rasa.core.agent`` does with the timer store: ``AvailableEndpoints`` read from
``endpoints.yml``, ``create_timer_manager(endpoints.timer_store)`` (the name ``rasa.core.agent``
imports from ``rasa.core.timer_managers.timer_manager``, after ``turnstile.rasa.install()``),
then ``Agent.initialize_timer_manager``'s two calls: ``set_callback(handle_session_timeout)``
and ``start()``; ``Agent.close`` calls ``stop()``. The callback stands in for
``MessageProcessor.handle_session_timeout(sender_id, session_id, scheduled_time)`` and writes
what it saw to a shared file, one line per step, so pods in other processes report too.

Run as a process: ``python -m tests.rasa.timer_pods ENDPOINTS RECORD POD COUNT TIMEOUT DELAY``
schedules COUNT timers ``POD-<i>`` due in TIMEOUT seconds, prints ``scheduled``, then serves
until killed; each callback records ``begin``, sleeps DELAY seconds, records ``done``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Fired:
    step: str
    pod: str
    sender_id: str
    session_id: str
    scheduled_time: float


class Recorder:
    """Callback steps appended to one file (``O_APPEND``: lines of several processes never mix)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, step: str, pod: str, sender_id: str, session_id: str | None,
              scheduled_time: float | None) -> None:
        line = f"{step} {pod} {sender_id} {session_id} {scheduled_time!r}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def read(self, step: str = "done") -> list[Fired]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split(" ")
            if parts[0] == step:
                out.append(Fired(parts[0], parts[1], parts[2], parts[3], float(parts[4])))
        return out

    def counts(self, step: str = "done") -> Counter[str]:
        return Counter(f.sender_id for f in self.read(step))

    async def wait_for(self, senders: set[str], timeout: float, step: str = "done") -> None:
        """Bounded wait until every sender in ``senders`` reached ``step``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if senders <= set(self.counts(step)):
                return
            await asyncio.sleep(0.05)
        missing = senders - set(self.counts(step))
        raise AssertionError(
            f"{len(missing)} timer(s) never reached {step!r}: {sorted(missing)[:10]}"
        )


def session_timeout_handler(
    recorder: Recorder, pod: str, delay: float = 0.0
) -> Callable[[str, str | None, float | None], Awaitable[None]]:
    """Stands in for ``MessageProcessor.handle_session_timeout`` (Rasa's ``TimerCallback``)."""

    async def handle_session_timeout(
        sender_id: str, session_id: str | None, scheduled_time: float | None = None
    ) -> None:
        recorder.write("begin", pod, sender_id, session_id, scheduled_time)
        if delay:
            await asyncio.sleep(delay)
        recorder.write("done", pod, sender_id, session_id, scheduled_time)

    return handle_session_timeout


async def start_pod(endpoints: Path, recorder: Recorder, pod: str, delay: float = 0.0) -> Any:
    """What ``rasa.core.agent`` does with the timer store, up to a started manager."""
    from rasa.core.config.available_endpoints import AvailableEndpoints  # noqa: PLC0415
    from rasa.core.timer_managers.timer_manager import create_timer_manager  # noqa: PLC0415

    available = AvailableEndpoints.read_endpoints(str(endpoints))
    manager = create_timer_manager(available.timer_store)  # load_agent
    manager.set_callback(session_timeout_handler(recorder, pod, delay))  # initialize_timer_manager
    await manager.start()
    return manager


async def _serve(endpoints: Path, recorder: Recorder, pod: str, *, count: int, timeout: float,
                 delay: float) -> None:
    manager = await start_pod(endpoints, recorder, pod, delay)
    callback = session_timeout_handler(recorder, pod, delay)
    for i in range(count):
        await manager.schedule_timer(f"{pod}-{i}", "s1", timeout, callback)
    print("scheduled", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    import turnstile.rasa  # noqa: PLC0415

    endpoints, record, pod, count, timeout, delay = sys.argv[1:]
    turnstile.rasa.install()
    asyncio.run(_serve(Path(endpoints), Recorder(Path(record)), pod, count=int(count),
                       timeout=float(timeout), delay=float(delay)))


if __name__ == "__main__":
    main()
