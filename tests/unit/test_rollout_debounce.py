"""The per-namespace debounce in front of ``sync_rollouts``: one sync per burst, bounded."""

from __future__ import annotations

import asyncio

from turnstile.operator.handlers.debounce import Debouncer

SETTLE = 0.05


class Recorder:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[str, float]] = []
        self.fail_first = fail_first
        self.called = asyncio.Event()

    async def __call__(self, key: str) -> None:
        self.calls.append((key, asyncio.get_running_loop().time()))
        self.called.set()
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("api down")


async def test_a_burst_of_pokes_syncs_once_after_it_settles() -> None:
    action = Recorder()
    debouncer = Debouncer(action, settle=SETTLE, max_delay=5)
    loop = asyncio.get_running_loop()
    last_poke = loop.time()
    for _ in range(10):
        debouncer.poke("ns")
        last_poke = loop.time()
        await asyncio.sleep(SETTLE / 5)
    await debouncer.idle()
    assert [k for k, _ in action.calls] == ["ns"]
    assert action.calls[0][1] >= last_poke + SETTLE * 0.9


async def test_namespaces_are_debounced_independently() -> None:
    action = Recorder()
    debouncer = Debouncer(action, settle=SETTLE, max_delay=5)
    debouncer.poke("a")
    debouncer.poke("b")
    debouncer.poke("a")
    await debouncer.idle()
    assert sorted(k for k, _ in action.calls) == ["a", "b"]


async def test_a_namespace_that_never_goes_quiet_still_syncs_within_max_delay() -> None:
    action = Recorder()
    debouncer = Debouncer(action, settle=SETTLE, max_delay=SETTLE * 3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < SETTLE * 8:
        debouncer.poke("busy")
        await asyncio.sleep(SETTLE / 5)
    await debouncer.idle()
    assert action.calls, "never synced"
    assert action.calls[0][1] - start <= SETTLE * 3 + 0.05
    assert len(action.calls) >= 2


async def test_a_poke_during_a_sync_schedules_exactly_one_more() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(key: str) -> None:
        calls.append(key)
        started.set()
        await release.wait()

    debouncer = Debouncer(slow, settle=SETTLE, max_delay=5)
    debouncer.poke("ns")
    await started.wait()
    debouncer.poke("ns")
    debouncer.poke("ns")
    release.set()
    await debouncer.idle()
    assert calls == ["ns", "ns"]


async def test_a_failed_sync_is_retried(monkeypatch) -> None:
    monkeypatch.setattr("turnstile.operator.handlers.debounce.RETRY_INITIAL", SETTLE)
    action = Recorder(fail_first=2)
    debouncer = Debouncer(action, settle=SETTLE, max_delay=5)
    debouncer.poke("ns")
    await asyncio.wait_for(debouncer.idle(), timeout=5)
    assert len(action.calls) == 3


async def test_close_cancels_pending_syncs() -> None:
    action = Recorder()
    debouncer = Debouncer(action, settle=10, max_delay=10)
    debouncer.poke("ns")
    await debouncer.close()
    assert action.calls == []


async def test_a_change_wakes_a_retry_that_waits_out_its_backoff() -> None:
    # The backoff is left at its real length (2 s, doubling to 60 s): a change must not wait.
    action = Recorder(fail_first=1)
    debouncer = Debouncer(action, settle=SETTLE, max_delay=5)
    debouncer.poke("ns")
    await asyncio.wait_for(action.called.wait(), timeout=5)
    await asyncio.sleep(SETTLE)  # the retry now waits its backoff
    changed = asyncio.get_running_loop().time()
    debouncer.poke("ns")
    await asyncio.wait_for(debouncer.idle(), timeout=5)
    assert len(action.calls) == 2
    assert action.calls[1][1] - changed < SETTLE + 0.5


async def test_the_api_servers_return_wakes_a_retry(monkeypatch) -> None:
    monkeypatch.setattr("turnstile.operator.handlers.debounce.REACHABLE_EVERY", SETTLE)
    action = Recorder(fail_first=1)
    up = asyncio.Event()

    async def reachable() -> bool:
        return up.is_set()

    debouncer = Debouncer(action, settle=SETTLE, max_delay=5,
                          outage=lambda exc: isinstance(exc, RuntimeError), reachable=reachable)
    debouncer.poke("ns")
    await asyncio.wait_for(action.called.wait(), timeout=5)
    await asyncio.sleep(SETTLE * 4)  # still down: no retry yet
    assert len(action.calls) == 1
    back = asyncio.get_running_loop().time()
    up.set()
    await asyncio.wait_for(debouncer.idle(), timeout=5)
    assert len(action.calls) == 2
    assert action.calls[1][1] - back < SETTLE * 2 + 0.5


async def test_a_failure_that_is_not_an_outage_keeps_its_backoff(monkeypatch) -> None:
    monkeypatch.setattr("turnstile.operator.handlers.debounce.REACHABLE_EVERY", SETTLE)
    monkeypatch.setattr("turnstile.operator.handlers.debounce.RETRY_INITIAL", SETTLE * 10)
    action = Recorder(fail_first=1)

    async def reachable() -> bool:
        return True

    debouncer = Debouncer(action, settle=SETTLE, max_delay=5,
                          outage=lambda exc: False, reachable=reachable)
    debouncer.poke("ns")
    await asyncio.wait_for(debouncer.idle(), timeout=5)
    assert action.calls[1][1] - action.calls[0][1] >= SETTLE * 10 * 0.9


async def test_a_failed_sync_logs_one_line_with_its_cause(caplog) -> None:
    action = Recorder(fail_first=1)
    debouncer = Debouncer(action, settle=SETTLE, max_delay=5)
    with caplog.at_level("WARNING", logger="turnstile.operator.handlers.debounce"):
        debouncer.poke("ns")
        await asyncio.wait_for(action.called.wait(), timeout=5)
        await asyncio.sleep(SETTLE)
        await debouncer.close()
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1
    assert "RuntimeError: api down" in failed[0].getMessage()
    assert failed[0].exc_info is None


async def test_a_periodic_resync_does_not_cut_a_retrys_backoff_short(monkeypatch) -> None:
    monkeypatch.setattr("turnstile.operator.handlers.debounce.RETRY_INITIAL", SETTLE * 10)
    action = Recorder(fail_first=1)
    debouncer = Debouncer(action, settle=SETTLE, max_delay=5)
    debouncer.poke("ns")
    await asyncio.wait_for(action.called.wait(), timeout=5)
    for _ in range(5):
        debouncer.poke("ns", change=False)
        await asyncio.sleep(SETTLE)
    assert len(action.calls) == 1
    await asyncio.wait_for(debouncer.idle(), timeout=5)
    assert action.calls[1][1] - action.calls[0][1] >= SETTLE * 10 * 0.9
