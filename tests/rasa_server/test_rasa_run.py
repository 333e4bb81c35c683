"""Turnstile's lock store inside real ``rasa run`` servers: two per Redis mode, one conversation.

Each mode's two servers (``pair``: Rasa 3.6.21 on uvloop, ``-W always::ResourceWarning -X
dev``, ``endpoints.yml`` from ``turnstile render``) serve these checks in order:

1. bursts of 20 concurrent messages on one conversation, alternating between the servers: every
   message answered with its own reply, in the tracker exactly once, each followed by its reply
   before the next user message (500 messages per mode);
2. a holder that dies with SIGKILL while holding the conversation: the messages queued behind it
   on both servers are all served once its ticket expires, within ``lock_lifetime`` +
   ``DEAD_HOLDER_SLACK`` seconds of the kill, and none is served before that ticket frees;
3. a clean stop (SIGTERM to one server, SIGINT to the other) leaves no ``ResourceWarning:
   unclosed`` in either server's stderr.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid

import aiohttp
import pytest
import yaml

from tests.rasa_server.conftest import LOCK_LIFETIME, MEASURED, Pair
from tests.rasa_server.servers import (
    ROOT,
    UNCLOSED,
    Sent,
    audit,
    base_env,
    send,
    tracker_events,
)
from turnstile.stores.locks.redis import RedisTicketLockStore

pytestmark = [pytest.mark.rasa_server, pytest.mark.timeout(300)]

BURST = 20
BURSTS_PER_CONVERSATION = 5
CONVERSATIONS = 5
#: Per server, queued behind the dead holder.
QUEUED_PER_SERVER = 4
#: After the dead holder's ticket expires (at most ``LOCK_LIFETIME`` after the kill), the
#: queued messages must all be served within this many seconds: 8 messages of a few tens of
#: milliseconds each, on a loaded 2-core machine under ``-X dev``.
DEAD_HOLDER_SLACK = 10.0


def _failed(sent: list[Sent]) -> list[str]:
    return [
        f"{s.tag} via {s.server}: {s.error or s.replies} after {s.seconds:.2f} s"
        for s in sent
        if not s.answered
    ]


async def test_bursts_alternating_servers_serve_every_message_once_in_order(pair: Pair) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for c in range(CONVERSATIONS):
            sender = f"burst-{c}-{uuid.uuid4().hex[:8]}"
            tags: list[str] = []
            for b in range(BURSTS_PER_CONVERSATION):
                burst = [f"m{b * BURST + i}" for i in range(BURST)]
                tags += burst
                sent = await asyncio.gather(
                    *(
                        send(session, pair.servers[i % 2], sender, tag)
                        for i, tag in enumerate(burst)
                    )
                )
                assert not _failed(sent), f"{pair.mode}: unanswered: {_failed(sent)}"
            for server in pair.servers:  # both read the one shared tracker
                found = audit(await tracker_events(session, server, sender), tags)
                assert found.ok, f"{pair.mode}, tracker via {server.name}: {found.describe()}"
    MEASURED.append(
        f"{pair.mode}: {CONVERSATIONS * BURSTS_PER_CONVERSATION * BURST} messages in bursts of "
        f"{BURST}, 0 lost, 0 out of order ({time.monotonic() - started:.1f} s)"
    )


async def test_messages_queued_behind_a_killed_holder_are_served_after_its_ticket_expires(
    pair: Pair,
) -> None:
    sender = f"dead-holder-{uuid.uuid4().hex[:8]}"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.rasa_server.holder", str(pair.endpoints), sender,
        cwd=ROOT, env=base_env(pair.env), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 120)
        assert line.startswith(b"HELD "), f"holder did not take the lock: {line!r}"
        holder_expires = float(line.split()[1])  # epoch seconds, from Redis' clock

        async with aiohttp.ClientSession() as session:
            tags = [f"m{i}" for i in range(2 * QUEUED_PER_SERVER)]
            tasks = [
                asyncio.ensure_future(send(session, pair.servers[i % 2], sender, tag))
                for i, tag in enumerate(tags)
            ]
            # Wait (bounded) until every message has drawn its ticket behind the holder.
            await _wait_queued(pair, sender, len(tags) + 1, timeout=30)
            os.killpg(holder.pid, signal.SIGKILL)
            killed = time.monotonic()
            killed_epoch = time.time()
            done_at: dict[str, float] = {}

            async def timed(task: asyncio.Future[Sent]) -> Sent:
                sent = await task
                done_at[sent.tag] = time.monotonic()
                return sent

            bound = LOCK_LIFETIME + DEAD_HOLDER_SLACK
            sent = await asyncio.wait_for(
                asyncio.gather(*(timed(t) for t in tasks)), bound + 60
            )
            assert not _failed(sent), (
                f"{pair.mode}: messages queued behind the dead holder were dropped: "
                f"{_failed(sent)}"
            )
            last = max(done_at.values()) - killed
            MEASURED.append(
                f"{pair.mode}: {len(tags)} messages queued behind a holder killed with -9 were "
                f"served {min(done_at.values()) - killed:.2f}-{last:.2f} s after the kill "
                f"(bound {LOCK_LIFETIME + DEAD_HOLDER_SLACK:.0f} s; the dead ticket expired "
                f"{holder_expires - killed_epoch:.2f} s after the kill)"
            )
            assert last <= bound, (
                f"{pair.mode}: the last queued message was served {last:.1f} s after the kill "
                f"(bound {bound:.0f} s = lock_lifetime {LOCK_LIFETIME} + {DEAD_HOLDER_SLACK:.0f})"
            )
            # Nobody ran while the dead holder's ticket was live (0.5 s for clock granularity:
            # the expiry is Redis' millisecond clock, the replies are this machine's).
            first = min(done_at.values()) - killed + killed_epoch
            assert first >= holder_expires - 0.5, (
                f"{pair.mode}: a message was served {holder_expires - first:.2f} s before the "
                "dead holder's ticket expired"
            )
            found = audit(await tracker_events(session, pair.a, sender), tags)
            assert found.ok, f"{pair.mode}: {found.describe()}"
    finally:
        if holder.returncode is None:
            os.killpg(holder.pid, signal.SIGKILL)
            await holder.wait()


async def _wait_queued(pair: Pair, sender: str, tickets: int, *, timeout: float) -> None:
    """Bounded poll of the conversation's queue in Redis, through the store's own reader."""
    text = pair.endpoints.read_text()
    for name, value in pair.env.items():  # what Rasa's reader expands
        text = text.replace("${" + name + "}", value)
    section = dict(yaml.safe_load(text)["lock_store"])
    section.pop("type")
    store = RedisTicketLockStore.from_kwargs(section)
    try:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lock = await store.get_lock(sender)
            seen = 0 if lock is None else len(lock.tickets)
            if seen >= tickets:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{pair.mode}: {seen} of {tickets} tickets queued after {timeout:.0f} s"
        )
    finally:
        await store.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_clean_stop_leaves_no_unclosed_resource(pair: Pair, stop: signal.Signals) -> None:
    server = pair.a if stop == signal.SIGTERM else pair.b
    assert server.running, f"{server.name} is not running before its stop"
    code = server.stop(stop, timeout=60)
    stderr = server.stderr_text()
    unclosed = [line for line in stderr.splitlines() if UNCLOSED in line]
    assert not unclosed, (
        f"{pair.mode}: {len(unclosed)} unclosed resources after {stop.name} (rc={code}):\n"
        + "\n".join(unclosed[:10])
    )
    assert code == 0, f"{pair.mode}: rc={code} after {stop.name}:\n{server.log_tail()}"
