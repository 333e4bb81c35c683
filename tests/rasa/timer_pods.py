"""Rasa pods' timer side, in this process or as a real process that a test can kill with -9.

A pod is what ``rasa.core.agent`` does with the timer store: ``AvailableEndpoints`` read from
``endpoints.yml``, ``create_timer_manager(endpoints.timer_store)`` (the name ``rasa.core.agent``
imports from ``rasa.core.timer_managers.timer_manager``, after ``turnstile.rasa.install()``),
then ``Agent.initialize_timer_manager``'s two calls: ``set_callback(handle_session_timeout)``
and ``start()``; ``Agent.close`` calls ``stop()``. The callback stands in for
``MessageProcessor.handle_session_timeout(sender_id, session_id, scheduled_time)`` and writes
what it saw to a shared file, one line per step with the wall-clock time of the step, so pods
in other processes (or pods on one node, through a hostPath directory) report too.

Run as a process: ``python -m tests.rasa.timer_pods ENDPOINTS RECORD POD COUNT TIMEOUT DELAY``
schedules COUNT timers ``POD-<i>`` due in TIMEOUT seconds, prints ``scheduled``, then serves
until killed or sent SIGTERM (then ``stop()``, as ``Agent.close`` on a pod's shutdown); each
callback records ``begin``, sleeps DELAY seconds, records ``done``.

The node tier runs it as a pod program (``tests/node/test_timer_pods.py``): this file alone,
with no import from ``tests``, by the Python of the Rasa Pro image. Like ``turnstile-rasa`` it
first waits until ``ENDPOINTS`` holds the sections the pod was told to expect (the operator's
``TURNSTILE_EXPECT_TIMER_STORE``), and it creates the file ``$TURNSTILE_HARNESS_READY`` once its
manager has started (the pod's readiness) and removes it when it stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
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
    at: float  # wall-clock time of the step

    @property
    def lateness(self) -> float:
        return self.at - self.scheduled_time


class Recorder:
    """Callback steps appended to one file (``O_APPEND``: lines of several processes never mix)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, step: str, pod: str, sender_id: str, session_id: str | None,
              scheduled_time: float | None) -> None:
        line = f"{step} {pod} {sender_id} {session_id} {scheduled_time!r} {time.time()!r}\n"
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
                out.append(Fired(parts[0], parts[1], parts[2], parts[3], float(parts[4]),
                                 float(parts[5])))
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


def _mark_ready(ready: bool) -> None:
    """The pod's readiness: ``$TURNSTILE_HARNESS_READY`` exists while the manager runs."""
    path = os.environ.get("TURNSTILE_HARNESS_READY")
    if path and ready:
        Path(path).touch()
    elif path:
        Path(path).unlink(missing_ok=True)


async def _serve(endpoints: Path, recorder: Recorder, pod: str, *, count: int, timeout: float,
                 delay: float) -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    manager = await start_pod(endpoints, recorder, pod, delay)
    _mark_ready(True)
    callback = session_timeout_handler(recorder, pod, delay)
    for i in range(count):
        await manager.schedule_timer(f"{pod}-{i}", "s1", timeout, callback)
    print("scheduled", flush=True)
    await stopping.wait()
    _mark_ready(False)
    await manager.stop()  # Agent.close: pending timers stay for the other pods
    print("stopped", flush=True)


def main() -> None:
    import turnstile.rasa  # noqa: PLC0415
    from turnstile.rasa.startup import wait_until_safe  # noqa: PLC0415

    endpoints, record, pod, count, timeout, delay = sys.argv[1:]
    wait_until_safe(["run", "--endpoints", endpoints])  # what turnstile-rasa does first
    turnstile.rasa.install()
    asyncio.run(_serve(Path(endpoints), Recorder(Path(record)), pod, count=int(count),
                       timeout=float(timeout), delay=float(delay)))


if __name__ == "__main__":
    main()
