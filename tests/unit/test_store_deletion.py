"""Deleting a store is quick whatever its Redis does: re-checks give way, probes are bounded."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from turnstile.operator import probes
from turnstile.operator.decide.credentials import Credentials
from turnstile.operator.handlers import stores
from turnstile.operator.model.specs import parse_store


class Stopped:
    """kopf's ``stopped`` flag as a timer sees it."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    async def wait(self) -> None:
        await self.flag.wait()


async def test_a_re_check_in_flight_is_cancelled_when_the_timer_is_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dialling = asyncio.Event()
    cancelled = asyncio.Event()

    async def silent_redis(*_: Any) -> None:
        dialling.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(stores, "reconcile", silent_redis)
    stopped = Stopped()
    timer = asyncio.ensure_future(
        stores.on_timer({}, {}, logging.getLogger("t"), stopped=stopped)  # type: ignore[arg-type]
    )
    await asyncio.wait_for(dialling.wait(), 1)
    started = time.monotonic()
    stopped.flag.set()  # kopf: the store is being deleted
    await asyncio.wait_for(timer, stores.CANCEL_GRACE + 1)
    assert cancelled.is_set()
    assert time.monotonic() - started < stores.CANCEL_GRACE + 0.5


async def test_a_re_check_that_finishes_is_not_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[bool] = []

    async def quick(*_: Any) -> None:
        done.append(True)

    monkeypatch.setattr(stores, "reconcile", quick)
    await stores.on_timer({}, {}, logging.getLogger("t"), stopped=Stopped())  # type: ignore[arg-type]
    assert done == [True]


async def test_the_whole_check_is_bounded_even_if_closing_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hangs(*_: Any, **__: Any) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(probes, "_check", hangs)
    store = parse_store({
        "apiVersion": "turnstile.dev/v1alpha1", "kind": "LockStore",
        "metadata": {"name": "s", "namespace": "n", "uid": "u"},
        "spec": {"redis": {"host": "127.0.0.1", "port": 6390}},
    })  # fmt: skip
    started = time.monotonic()
    report = await probes.check(store, Credentials(), timeout=0.2)
    assert time.monotonic() - started < 0.2 + probes.CLOSE_GRACE + 0.5
    assert not report.ok
    assert report.reason == "Unreachable"
    assert report.message == "Redis (127.0.0.1:6390/1) did not answer within 1.2s"
