"""``turnstile.rasa.TicketLockStore`` loaded and used by real Rasa code (Rasa Pro 3.21, Rasa 3.6).

Rasa's path, step by step, as ``rasa run --endpoints endpoints.yml`` takes it:
``read_endpoint_config(path, "lock_store")`` (``${VAR}`` expanded from the environment) ->
``LockStore.create(endpoint_config)`` (imports ``type``, calls ``Class(endpoint_config=...)``;
the isinstance pass-through for a ready store) -> the processor's
``async with lock_store.lock(sender_id):``. Every test runs against a real standalone
(password-protected, password and port as ``${VAR}``), cluster and sentinel Redis.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import turnstile.rasa
from tests.rasa.conftest import (
    HAS_TIMER_STORES,
    PASSWORD_ENV,
    PORT_ENV,
    RASA_VERSION,
    Topology,
    require_rasa,
)
from turnstile.rasa import TicketLockStore, locks, timers

require_rasa()
if RASA_VERSION is not None:  # without Rasa every test here is skipped, loudly (conftest.py)
    from rasa.core.lock import TicketLock
    from rasa.core.lock_store import LockError, LockStore
    from rasa.utils.endpoints import EndpointConfig, read_endpoint_config

pytestmark = [
    pytest.mark.rasa,
    # Rasa 3.6 validates endpoints.yml with pykwalify 1.8, which loads its extensions with the
    # deprecated load_module() on every read; a third-party warning, not Turnstile's.
    pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning"),
]

LOCK_STORE = "turnstile.rasa.TicketLockStore"
#: Generous: the shared CI box may be loaded; every wait here normally takes milliseconds.
WAIT = 20.0


def load_lock_store(path: Path) -> Any:
    """Rasa's own loading path for ``lock_store`` in ``endpoints.yml``."""
    return LockStore.create(read_endpoint_config(str(path), "lock_store"))


@pytest.fixture
async def lock_stores(
    topology: Topology, endpoints_file: Callable[..., Path]
) -> AsyncIterator[Callable[[], Any]]:
    """``make()`` builds one more lock store ("pod") from the same ``endpoints.yml``."""
    path = endpoints_file(lock_store=topology.section(LOCK_STORE))
    made: list[Any] = []

    def make() -> Any:
        store = load_lock_store(path)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


def test_turnstile_rasa_imports_on_this_rasa() -> None:
    """``type: turnstile.rasa.X`` imports the package; both adapters must import on any Rasa."""
    assert locks.HAS_RASA is True
    assert issubclass(turnstile.rasa.TicketLockStore, LockStore)
    # Rasa 3.6 has no timer stores: the timer adapter must still import (on its plain base).
    assert timers.HAS_RASA is HAS_TIMER_STORES


async def test_endpoints_yml_read_by_rasa(
    topology: Topology, endpoints_file: Callable[..., Path]
) -> None:
    path = endpoints_file(lock_store=topology.section(LOCK_STORE))
    config = read_endpoint_config(str(path), "lock_store")
    assert isinstance(config, EndpointConfig)
    assert config.type == LOCK_STORE
    assert config.kwargs["key_prefix"] == topology.key_prefix
    if topology.mode == "standard":  # ${VAR}s expanded by Rasa, as strings
        assert f"${{{PASSWORD_ENV}}}" in path.read_text()
        assert config.kwargs["password"] == topology.env[PASSWORD_ENV]
        assert config.kwargs["port"] == topology.env[PORT_ENV]


def test_quoted_env_reference_is_not_expanded_by_rasa(
    endpoints_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa (3.6 and Pro) expands ``${VAR}`` in plain YAML scalars only: whoever renders
    ``endpoints.yml`` must not quote them, or the store gets the literal text."""
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    body = f'  type: {LOCK_STORE}\n  plain: ${{{PASSWORD_ENV}}}\n  quoted: "${{{PASSWORD_ENV}}}"'
    config = read_endpoint_config(str(endpoints_file(lock_store=body)), "lock_store")
    assert config.kwargs["plain"] == "s3cret"
    assert config.kwargs["quoted"] == f"${{{PASSWORD_ENV}}}"


async def test_rasa_factory_builds_the_store(lock_stores: Callable[[], Any]) -> None:
    store = lock_stores()
    assert type(store) is TicketLockStore
    assert isinstance(store, LockStore)
    # Agent(lock_store=store) goes through the same factory: an instance passes as it is.
    assert LockStore.create(store) is store
    async with store.lock("factory") as lock:  # and it reaches Redis (auth, topology)
        assert isinstance(lock, TicketLock)
        assert lock.conversation_id == "factory"


async def test_mutual_exclusion_across_pods_and_tasks(lock_stores: Callable[[], Any]) -> None:
    """Many messages for one conversation on two pods: one at a time, all served, lock gone."""
    pods = [lock_stores(), lock_stores()]
    active = 0
    max_active = 0
    served: list[int] = []

    async def message(i: int) -> None:
        nonlocal active, max_active
        async with pods[i % 2].lock("conv"):
            active += 1
            max_active = max(max_active, active)
            await asyncio.sleep(0.005)
            served.append(i)
            active -= 1

    # A second conversation in parallel must not interfere.
    other: list[int] = []

    async def other_message(i: int) -> None:
        async with pods[(i + 1) % 2].lock("other-conv"):
            other.append(i)

    await asyncio.wait_for(
        asyncio.gather(*(message(i) for i in range(16)), *(other_message(i) for i in range(4))),
        WAIT,
    )
    assert max_active == 1
    assert sorted(served) == list(range(16))
    assert sorted(other) == list(range(4))
    # Rasa's contract: a conversation nobody waits for has no lock left.
    assert pods[0].get_lock("conv") is None
    assert pods[1].get_lock("conv") is None


async def _wait_for_tickets(store: Any, conversation_id: str, count: int) -> None:
    async def poll() -> None:
        while True:
            lock = store.get_lock(conversation_id)  # Rasa's synchronous contract method
            if lock is not None and len(lock.tickets) >= count:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


async def test_messages_served_in_arrival_order_across_pods(
    lock_stores: Callable[[], Any],
) -> None:
    """Rasa's ticket lock is FIFO: messages queued on two pods enter in the order they queued."""
    pods = [lock_stores(), lock_stores()]
    entered: list[int] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with pods[0].lock("fifo"):
            entered.append(0)
            holding.set()
            await release.wait()

    async def message(i: int) -> None:
        async with pods[i % 2].lock("fifo"):
            entered.append(i)
            await asyncio.sleep(0.002)

    tasks = [asyncio.create_task(first())]
    await asyncio.wait_for(holding.wait(), WAIT)
    for i in range(1, 7):
        tasks.append(asyncio.create_task(message(i)))
        await _wait_for_tickets(pods[0], "fifo", i + 1)  # i is queued before i + 1 arrives
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert entered == list(range(7))


async def test_exception_in_the_body_releases_the_conversation(
    lock_stores: Callable[[], Any],
) -> None:
    a, b = lock_stores(), lock_stores()
    with pytest.raises(RuntimeError, match="boom"):
        async with a.lock("crash"):
            raise RuntimeError("boom")

    async def again() -> None:
        async with b.lock("crash"):
            pass

    await asyncio.wait_for(again(), WAIT)
    assert a.get_lock("crash") is None


async def test_waiter_outlives_its_own_lifetime_behind_a_slow_holder_and_is_served(
    lock_stores: Callable[[], Any],
) -> None:
    """A message that waits longer than its lifetime is served when the holder leaves: the
    lifetime counts from its turn (Rasa's own stores drop it with ``LockError``)."""
    a, b = lock_stores(), lock_stores()
    holding = asyncio.Event()
    order: list[str] = []

    async def holder() -> None:
        async with a.lock("expire", lock_lifetime=30):
            holding.set()
            await asyncio.sleep(1.5)
            order.append("holder")

    task = asyncio.create_task(holder())
    await asyncio.wait_for(holding.wait(), WAIT)

    async def waiter() -> None:
        async with b.lock("expire", lock_lifetime=0.5):
            order.append("waiter")

    await asyncio.wait_for(waiter(), WAIT)
    await asyncio.wait_for(task, WAIT)
    assert order == ["holder", "waiter"]


async def test_a_deleted_lock_fails_its_waiter_with_rasas_lock_error(
    lock_stores: Callable[[], Any],
) -> None:
    a, b = lock_stores(), lock_stores()
    a.issue_ticket("deleted", 30)  # held elsewhere

    async def waiter() -> None:
        async with b.lock("deleted", lock_lifetime=30):
            pytest.fail("acquired a lock held by another message")

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.3)
    await asyncio.to_thread(a.delete_lock, "deleted")
    with pytest.raises(LockError):
        await asyncio.wait_for(task, WAIT)


async def test_rasas_own_lock_algorithm_over_the_contract_methods(
    lock_stores: Callable[[], Any],
) -> None:
    """Rasa's base ``LockStore.lock`` (issue_ticket, get_lock, is_locked polling, cleanup) run
    on Turnstile's contract methods, interleaved with Turnstile's fast path on another pod:
    still one message at a time. This is the documented custom-lock-store contract."""
    rasa_pod, fast_pod = lock_stores(), lock_stores()
    active = 0
    max_active = 0
    served: list[str] = []

    async def body(tag: str) -> None:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        await asyncio.sleep(0.005)
        served.append(tag)
        active -= 1

    async def via_rasa(i: int) -> None:
        # Rasa's generic implementation, bound to Turnstile's store; polls every 50 ms.
        async with LockStore.lock(rasa_pod, "mixed", wait_time_in_seconds=0.05):
            await body(f"rasa{i}")

    async def via_turnstile(i: int) -> None:
        async with fast_pod.lock("mixed"):
            await body(f"fast{i}")

    jobs = itertools.chain.from_iterable((via_rasa(i), via_turnstile(i)) for i in range(4))
    await asyncio.wait_for(asyncio.gather(*jobs), WAIT)
    assert max_active == 1
    assert len(served) == 8
    assert rasa_pod.get_lock("mixed") is None


async def test_cancelled_waiter_and_holder_give_their_tickets_back(
    lock_stores: Callable[[], Any],
) -> None:
    """Sanic cancels a handler on request timeout or client disconnect; Rasa's base store
    returns the ticket in ``finally``. A waiter cancelled while it waits, and a holder cancelled
    in its body, must not block the queue until their tickets' lifetime (60 s) runs out."""
    a, b = lock_stores(), lock_stores()
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with a.lock("cancel"):
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with b.lock("cancel"):
            pytest.fail("a cancelled waiter got the lock")

    first = asyncio.create_task(holder())
    await asyncio.wait_for(holding.wait(), WAIT)
    cancelled_waiter = asyncio.create_task(waiter())
    await _wait_for_tickets(a, "cancel", 2)
    await asyncio.sleep(0.3)  # the waiter has its ticket and is waiting for its turn
    cancelled_waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(cancelled_waiter, 5.0)
    first.cancel()  # the holder is cancelled inside its body
    with pytest.raises(asyncio.CancelledError):
        await first

    async def next_message() -> None:
        async with b.lock("cancel"):
            pass

    await asyncio.wait_for(next_message(), 10.0)  # far below the 60 s ticket lifetime


async def test_message_cancelled_while_drawing_its_ticket_gives_it_back(
    lock_stores: Callable[[], Any],
) -> None:
    """The same cancellation, landing while the ticket is being drawn: Redis has issued it,
    the reply has not been read yet. Rasa's base store draws tickets synchronously, so this
    window does not exist there; here the ticket must still be returned (and the cancellation
    must reach the handler), or the conversation stays blocked for the ticket's lifetime."""
    a, b = lock_stores(), lock_stores()
    async with a.lock("warm"), b.lock("warm2"):  # connections up: the draw is one command
        pass
    holding = asyncio.Event()
    release = asyncio.Event()
    entered: list[str] = []

    async def holder() -> None:
        async with a.lock("drawing"):
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with b.lock("drawing"):
            entered.append("cancelled waiter")

    first = asyncio.create_task(holder())
    await asyncio.wait_for(holding.wait(), WAIT)
    drawing = asyncio.create_task(waiter())
    for _ in range(1000):
        await asyncio.sleep(0)  # one step of the waiter at a time ...
        lock = a.get_lock("drawing")  # ... and a blocking look: it cannot read its reply now
        if lock is not None and len(lock.tickets) == 2:
            break
    else:
        pytest.fail("the waiter never drew its ticket")
    drawing.cancel()  # Redis has issued the ticket; its reply is unread
    try:
        done, _ = await asyncio.wait({drawing}, timeout=5.0)
        assert done, "the cancellation was lost: the cancelled message still waits for the lock"
        assert drawing.cancelled(), f"the cancelled message ended otherwise: {drawing!r}"
    finally:
        release.set()
        await asyncio.wait_for(first, WAIT)
        if not drawing.done():  # only after a failed assertion: do not leak the task
            drawing.cancel()
            await asyncio.wait({drawing}, timeout=WAIT)

    async def next_message() -> None:
        async with b.lock("drawing"):
            entered.append("next")

    await asyncio.wait_for(next_message(), 10.0)  # far below the 60 s ticket lifetime
    assert entered == ["next"]


async def test_holder_past_its_lifetime_lets_the_next_message_in(
    lock_stores: Callable[[], Any],
) -> None:
    """Rasa's semantics: a ticket older than its lifetime no longer holds the conversation."""
    a, b = lock_stores(), lock_stores()
    holding = asyncio.Event()
    entered: list[str] = []

    async def stuck() -> None:
        async with a.lock("stuck", lock_lifetime=0.5):
            entered.append("stuck")
            holding.set()
            await asyncio.sleep(5)
        entered.append("stuck-done")

    async def next_message() -> None:
        async with b.lock("stuck"):
            entered.append("next")

    task = asyncio.create_task(stuck())
    await asyncio.wait_for(holding.wait(), WAIT)
    await asyncio.wait_for(next_message(), 4.0)  # before the stuck one finishes
    assert entered == ["stuck", "next"]
    await asyncio.wait_for(task, WAIT)
