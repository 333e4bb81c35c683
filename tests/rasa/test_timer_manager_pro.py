"""Rasa Pro 3.21 with Turnstile's timer manager: timers survive rollouts and dead pods.

Not collected under Rasa 3.6, which has no timer stores (``tests/rasa/conftest.py``).

Every pod is built the way ``rasa.core.agent`` builds its timer side (``tests/rasa/timer_pods.py``):
``AvailableEndpoints.read_endpoints``, ``create_timer_manager(endpoints.timer_store)`` as
``rasa.core.agent`` imports it (after ``turnstile.rasa.install()``, which is what the
``turnstile-rasa`` launcher does), then ``Agent.initialize_timer_manager``'s calls
``set_callback(handle_session_timeout)`` and ``start()``, and ``Agent.close``'s ``stop()``.
Importing ``rasa.core.agent`` itself needs Rasa's whole stack (docs/rasa-compat.md), so its
calls are made here as it makes them. A pod killed with -9 is a real process.

Against a real standalone (``${VAR}`` password and port), Cluster and Sentinel Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rasa.conftest import HAS_TIMER_STORES, Topology, require_rasa
from tests.rasa.timer_pods import Recorder, session_timeout_handler, start_pod
from turnstile.rasa import RasaTimerManager, TimerStore, install, installed, uninstall

require_rasa()
if HAS_TIMER_STORES:
    import rasa.core.timer_managers.timer_manager as rasa_timer_managers
    from rasa.core.config.available_endpoints import AvailableEndpoints
    from rasa.core.timer_managers.in_memory_timer_manager import InMemorySessionTimerManager
    from rasa.core.timer_managers.redis_timer_manager import RedisSessionTimerManager

    import turnstile.rasa.timers as adapter

pytestmark = [pytest.mark.rasa]

TIMER_STORE = "turnstile.rasa.TimerStore"
ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0
#: Short polls and leases keep the tests quick; the defaults are 1 s and 30 s.
POLL = 0.1
LEASE = 2.0


@pytest.fixture
def installed_factory() -> Iterator[None]:
    """``turnstile.rasa.install()`` for one test (what ``turnstile-rasa`` does at start)."""
    assert install()
    yield
    uninstall()
    assert not installed()


@pytest.fixture
def endpoints(topology: Topology, endpoints_file: Callable[..., Path]) -> Path:
    return endpoints_file(
        timer_store=topology.section(TIMER_STORE, poll_interval=POLL, lease=LEASE)
    )


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    return Recorder(tmp_path / "fired.log")


class Pods:
    """In-process pods (managers) and pod processes, all stopped or killed at the end."""

    def __init__(self, endpoints: Path, recorder: Recorder) -> None:
        self.endpoints = endpoints
        self.recorder = recorder
        self.managers: list[Any] = []
        self.processes: list[subprocess.Popen[str]] = []

    async def start(self, pod: str, delay: float = 0.0) -> Any:
        manager = await start_pod(self.endpoints, self.recorder, pod, delay)
        self.managers.append(manager)
        return manager

    def spawn(self, pod: str, count: int, timeout: float, delay: float) -> subprocess.Popen[str]:
        """A pod as a real process; returns once it has scheduled its timers."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.rasa.timer_pods", str(self.endpoints),
             str(self.recorder.path), pod, str(count), str(timeout), str(delay)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        self.processes.append(process)
        assert process.stdout is not None
        for line in process.stdout:  # Rasa's structlog writes here too; bounded by the timeout
            if line.strip() == "scheduled":
                return process
        raise AssertionError(f"pod {pod} did not start (rc={process.wait(10)})")

    async def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for manager in self.managers:
            await manager.stop()


@pytest.fixture
async def pods(installed_factory: None, endpoints: Path, recorder: Recorder
               ) -> AsyncIterator[Pods]:
    pods = Pods(endpoints, recorder)
    yield pods
    await pods.close()


def kill9(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


async def test_the_agent_path_builds_turnstiles_manager_and_leaves_others_to_rasa(
    installed_factory: None, endpoints: Path
) -> None:
    available = AvailableEndpoints.read_endpoints(str(endpoints))
    # The name rasa.core.agent binds: `from ...timer_manager import create_timer_manager`.
    from rasa.core.timer_managers.timer_manager import create_timer_manager  # noqa: PLC0415

    manager = create_timer_manager(available.timer_store)
    assert type(manager) is RasaTimerManager
    assert isinstance(manager, rasa_timer_managers.SessionTimerManager)
    assert type(manager.store) is TimerStore
    await manager.store.aclose()
    # Rasa's own choices are unchanged: no timer store, and its built-in `type: redis`.
    assert type(create_timer_manager(None)) is InMemorySessionTimerManager


async def test_a_graceful_stop_of_pod_a_then_pod_b_fires_every_timer_once(
    pods: Pods, recorder: Recorder
) -> None:
    pod_a = await pods.start("A")
    callback = session_timeout_handler(recorder, "A")
    for i in range(50):
        await pod_a.schedule_timer(f"c{i}", "s1", 1.0, callback)
    scheduled = {f"c{i}": (await pod_a.get_timer(f"c{i}")).scheduled_time for i in range(50)}
    await pod_a.stop()  # a rollout: pod A goes away before anything is due
    await pods.start("B")
    await recorder.wait_for(set(scheduled), WAIT)
    await asyncio.sleep(3 * POLL)  # a duplicate, if any, would arrive now
    done = recorder.read()
    assert recorder.counts() == dict.fromkeys(scheduled, 1)
    assert {f.pod for f in done} == {"B"}
    # Rasa's arguments: (sender_id, session_id, the scheduled_time the timer was stored with).
    assert {f.sender_id: (f.session_id, f.scheduled_time) for f in done} == {
        s: ("s1", t) for s, t in scheduled.items()
    }


async def test_a_pod_killed_with_minus_9_mid_callback_leaves_its_timers_to_another_pod(
    pods: Pods, recorder: Recorder
) -> None:
    senders = {f"A-{i}" for i in range(50)}
    # Pod A (a real process) claims all 50 at once and runs 32 callbacks of 1 s at a time:
    # it is killed once the first 32 have finished (and been acknowledged, one by one) and
    # the other 18 are running.
    process = pods.spawn("A", count=50, timeout=0.5, delay=1.0)
    for _ in range(600):  # bounded: 30 s
        if len(recorder.counts("done")) >= 20 and len(recorder.counts("begin")) == 50:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    kill9(process)  # between claim and the callback's end for the timers it was firing
    begun_on_a = set(recorder.counts("begin"))
    done_on_a = set(recorder.counts("done"))
    assert begun_on_a - done_on_a, "pod A was killed with no callback running"
    await pods.start("B")  # the leases of A's timers run out; B fires them
    await recorder.wait_for(senders, WAIT)
    await asyncio.sleep(3 * POLL)
    counts = recorder.counts()
    assert set(counts) == senders  # nothing lost
    fired_by_b = {f.sender_id for f in recorder.read() if f.pod == "B"}
    assert done_on_a, "pod A finished no callback before the kill"
    assert senders - done_on_a <= fired_by_b
    duplicates = sum(n - 1 for n in counts.values())
    # Only a callback that finished in the instant before the kill, unacknowledged, repeats.
    assert duplicates <= 32, counts
    print(f"kill -9: {len(done_on_a)} done on A, {len(fired_by_b)} on B, duplicates {duplicates}")


async def test_timers_due_while_every_pod_is_down_fire_once_when_one_pod_returns(
    pods: Pods, recorder: Recorder
) -> None:
    process = pods.spawn("A", count=25, timeout=1.0, delay=0.0)
    pod_b = await pods.start("B")
    for i in range(25):
        await pod_b.schedule_timer(f"B-{i}", "s1", 1.0, session_timeout_handler(recorder, "B"))
    kill9(process)  # pod A dies
    await pod_b.stop()  # pod B is rolled away
    await asyncio.sleep(1.5)  # every timer comes due with no pod running
    assert recorder.read() == []
    await pods.start("C")
    senders = {f"A-{i}" for i in range(25)} | {f"B-{i}" for i in range(25)}
    await recorder.wait_for(senders, WAIT)
    await asyncio.sleep(3 * POLL)
    assert recorder.counts() == dict.fromkeys(senders, 1)
    assert {f.pod for f in recorder.read()} == {"C"}


@pytest.mark.slow
async def test_three_pods_with_1000_timers_each_fire_every_timer_once(
    pods: Pods, recorder: Recorder
) -> None:
    managers = [await pods.start(name) for name in ("A", "B", "C")]
    senders: set[str] = set()
    for manager, name in zip(managers, ("A", "B", "C"), strict=True):
        for i in range(1000):
            sender = f"{name}-{i}"
            senders.add(sender)
            await manager.schedule_timer(sender, "s1", 0.5 + (i % 20) / 20,
                                         session_timeout_handler(recorder, name))
    await recorder.wait_for(senders, WAIT)
    await asyncio.sleep(3 * POLL)
    counts = recorder.counts()
    duplicates = sum(n - 1 for n in counts.values())
    by_pod = {name: sum(1 for f in recorder.read() if f.pod == name) for name in "ABC"}
    print(f"3 pods x 1000: fired per pod {by_pod}, duplicates {duplicates}")
    assert set(counts) == senders
    assert duplicates == 0


async def test_rasa_without_the_launcher_gets_one_clear_warning(
    endpoints: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter, "_warned", False)
    available = AvailableEndpoints.read_endpoints(str(endpoints))
    with caplog.at_level(logging.WARNING, logger="turnstile.rasa.timers"):
        first = rasa_timer_managers.create_timer_manager(available.timer_store)
        second = rasa_timer_managers.create_timer_manager(available.timer_store)
    assert type(first) is InMemorySessionTimerManager  # Rasa's own factory, not installed
    warnings = [r for r in caplog.records if r.name == "turnstile.rasa.timers"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "will NOT survive restarts" in message
    assert "turnstile-rasa run" in message
    assert "turnstile.rasa.install()" in message
    for manager in (first, second):
        await manager.store.aclose()


async def test_with_the_launcher_installed_there_is_no_warning(
    installed_factory: None, endpoints: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(adapter, "_warned", False)
    available = AvailableEndpoints.read_endpoints(str(endpoints))
    with caplog.at_level(logging.WARNING, logger="turnstile.rasa.timers"):
        manager = rasa_timer_managers.create_timer_manager(available.timer_store)
    assert type(manager) is RasaTimerManager
    assert [r for r in caplog.records if r.name == "turnstile.rasa.timers"] == []
    await manager.store.aclose()


def test_rasas_built_in_redis_timer_store_still_gets_rasas_manager(
    installed_factory: None, redis_server: Any, endpoints_file: Callable[..., Path]
) -> None:
    host, port = redis_server.address
    path = endpoints_file(timer_store=f"  type: redis\n  host: {host}\n  port: {port}")
    available = AvailableEndpoints.read_endpoints(str(path))
    manager = rasa_timer_managers.create_timer_manager(available.timer_store)
    assert type(manager) is RedisSessionTimerManager


def test_spawned_sanic_workers_of_the_launcher_install_it_too() -> None:
    """Sanic starts extra workers with ``spawn``; they re-import the launcher script."""
    code = (
        "import turnstile.rasa.launcher, rasa.core.timer_managers.timer_manager as m; "
        "print(hasattr(m.create_timer_manager, '__turnstile_rasa_factory__'))"
    )
    env = {**os.environ, "TURNSTILE_RASA_LAUNCHED": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "True"
    env.pop("TURNSTILE_RASA_LAUNCHED")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_the_turnstile_rasa_console_script_hands_over_to_rasas_command_line() -> None:
    """``turnstile-rasa`` installs, then imports ``rasa.__main__``. This venv has only the
    Rasa modules the tests need (no ``rasa_sdk``), so Rasa's CLI cannot start here; the
    launcher says so, naming what is missing."""
    script = Path(sys.executable).parent / "turnstile-rasa"
    assert script.exists(), f"{script} missing: reinstall turnstile (pip install -e .)"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120,
                         check=False)
    try:
        import rasa.__main__  # noqa: F401, PLC0415
    except ImportError:
        assert out.returncode != 0
        expected = "turnstile-rasa: Rasa's command line (rasa.__main__) cannot be imported"
        assert expected in out.stderr
    else:  # a full Rasa install: `turnstile-rasa --version` is `rasa --version`
        assert out.returncode == 0, out.stderr


async def test_under_plain_rasa_the_same_rollout_fires_none_of_the_timers(
    endpoints: Path, recorder: Recorder
) -> None:
    """Why the launcher exists: Rasa's own factory wraps the store in its in-memory manager,
    whose ``stop()`` deletes pending timers, and no other pod ever polls for them."""
    assert not installed()
    pod_a = await start_pod(endpoints, recorder, "A")
    assert type(pod_a) is InMemorySessionTimerManager
    for i in range(50):
        await pod_a.schedule_timer(f"c{i}", "s1", 1.0, session_timeout_handler(recorder, "A"))
    await pod_a.stop()  # Agent.close on a rollout
    pod_b = await start_pod(endpoints, recorder, "B")
    try:
        await asyncio.sleep(2.0)
        assert recorder.read() == []
        assert [await pod_b.get_timer(f"c{i}") for i in range(50)] == [None] * 50
    finally:
        await pod_b.stop()
