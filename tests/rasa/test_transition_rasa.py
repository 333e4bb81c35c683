"""Adopting Turnstile with no window: Rasa's own lock stores (old pods) beside new pods in
transition, on one conversation, in all three Redis modes.

The old pods are Rasa's real classes, loaded by Rasa from ``endpoints.yml`` (``concurrent_redis``
and ``redis`` in Rasa Pro 3.21; ``redis`` in Rasa Open Source 3.6, standalone only: it has no
other mode). Each old pod runs in a thread of its own with its own event loop, as a separate
process would: Rasa's store makes synchronous Redis calls, which would otherwise never
interleave with anyone's. The new pods are ``turnstile.rasa.TicketLockStore`` with
``transition_from`` (the old section, as it was) and ``transition_until``.

Every holder records when it held; overlapping pairs are counted and named, and any pair
that involves a new pod fails. A pair of two old pods is Rasa's own race, which no peer can
prevent, and is printed, not failed: both of Rasa's stores race among old pods with no new pod
present (``test_rasas_concurrent_store_lets_two_old_pods_in_by_itself`` stages the
``concurrent_redis`` one with Rasa's methods alone; ``python -m bench.lock_overlaps`` counts
both per 1,000 bursts, with and without new pods). Rasa's ``redis`` store races so often (a
GET/SET of one JSON document: two old pods, 2 x 10 messages, overlapped 4-5 pairs, lost a
message, or left waiters polling for good) that its scenario runs one old pod (its synchronous
calls never interleave) beside two new ones.
Old pods poll every 0.05 s instead of Rasa's default 1 s, to keep the tier fast.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.platform.redis_servers import RedisServer
from tests.rasa.conftest import HAS_TIMER_STORES, RASA_VERSION, Topology, require_rasa

require_rasa()
if RASA_VERSION is not None:
    from rasa.core.lock_store import LockError, LockStore
    from rasa.utils.endpoints import read_endpoint_config

pytestmark = [
    pytest.mark.rasa,
    pytest.mark.filterwarnings("ignore:the load_module.. method is deprecated:DeprecationWarning"),
]

LOCK_STORE = "turnstile.rasa.TicketLockStore"
LIFETIME = 10.0
POLL = 0.05
HOLD = 0.01
#: Rasa Open Source 3.6 has only ``redis`` (and no deployment modes).
OLD_TYPES = ("concurrent_redis", "redis") if HAS_TIMER_STORES else ("redis",)


def yaml_lines(section: dict[str, Any], indent: int) -> list[str]:
    """A section as plain YAML scalars (so Rasa expands ``${VAR}``), nested mappings too."""
    pad = " " * indent
    lines: list[str] = []
    for key, value in section.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines += yaml_lines(value, indent + 2)
        elif isinstance(value, list):
            lines.append(f"{pad}{key}:")
            lines += [f"{pad}  - {item}" for item in value]
        else:
            lines.append(f"{pad}{key}: {value}")
    return lines


def old_section(store_type: str, keys: dict[str, Any], prefix: str, mode: str) -> dict[str, Any]:
    section = {"type": store_type, "key_prefix": prefix, **keys}
    if store_type == "redis" and mode == "standard" and HAS_TIMER_STORES:
        # Rasa Pro's RedisLockStoreConfig wants a username beside a password.
        section["username"] = "default"
    if not HAS_TIMER_STORES and "host" in section:
        # Rasa 3.6 passes ``url`` as the host and the other keys beside it.
        section["url"] = section.pop("host")
    if not HAS_TIMER_STORES:
        # Rasa Open Source 3.6's default db is 1, Rasa Pro's 0: the transition reads a section
        # without db as Rasa Pro's, so a 3.6 section names it (docs/adoption.md).
        section.setdefault("db", 1)
    return section


@dataclass
class Pods:
    """``endpoints.yml`` files for old pods and new pods, and Rasa's loader for each."""

    old_path: Path
    new_path: Path
    old_prefix: str

    def old(self) -> Any:
        return LockStore.create(read_endpoint_config(str(self.old_path), "lock_store"))

    def new(self) -> Any:
        return LockStore.create(read_endpoint_config(str(self.new_path), "lock_store"))


def write_pods(  # noqa: PLR0917 - a test helper, every argument differs per test
    tmp_path: Path, store_type: str, old_keys: dict[str, Any], new_keys: dict[str, Any],
    mode: str, until: float | str = "2099-01-01T00:00:00Z",
) -> Pods:
    prefix = "old" + uuid.uuid4().hex[:8]
    old = old_section(store_type, old_keys, prefix, mode)
    new = {"type": LOCK_STORE, "key_prefix": "new" + uuid.uuid4().hex[:8], **new_keys,
           "transition_from": old, "transition_until": until}
    old_path, new_path = tmp_path / "old.yml", tmp_path / "new.yml"
    old_path.write_text("\n".join(["lock_store:", *yaml_lines(old, 2)]) + "\n")
    new_path.write_text("\n".join(["lock_store:", *yaml_lines(new, 2)]) + "\n")
    return Pods(old_path, new_path, prefix)


@dataclass
class Record:
    """Who held the conversation when."""

    intervals: list[tuple[str, float, float]]
    lost: list[str]

    async def hold(self, store: Any, who: str, cid: str, *, rasa: bool) -> None:
        try:
            await asyncio.wait_for(self._hold(store, who, cid, rasa=rasa), 30)
        except (LockError, asyncio.TimeoutError) as exc:
            self.lost.append(f"{who}: {type(exc).__name__} {exc}")

    async def _hold(self, store: Any, who: str, cid: str, *, rasa: bool) -> None:
        if rasa:
            context = store.lock(cid, lock_lifetime=LIFETIME, wait_time_in_seconds=POLL)
        else:
            context = store.lock(cid, lock_lifetime=LIFETIME)
        async with context:
            start = time.monotonic()
            await asyncio.sleep(HOLD)
            self.intervals.append((who, start, time.monotonic()))

    def overlaps(self) -> list[tuple[str, str]]:
        spans = sorted(self.intervals, key=lambda s: s[1])
        pairs = []
        for i, (a, a0, a1) in enumerate(spans):
            for b, b0, b1 in spans[i + 1:]:
                if b0 >= a1:
                    break
                if a0 < b1:
                    pairs.append((a, b))
        return pairs


def run_old_pod(pods: Pods, record: Record, cid: str, name: str, messages: int) -> threading.Thread:
    """An old pod: Rasa's store on a thread with its own event loop."""

    async def main() -> None:
        store = pods.old()
        await asyncio.gather(*(
            record.hold(store, f"old:{name}:{i}", cid, rasa=True) for i in range(messages)
        ))

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    return thread


async def join(threads: list[threading.Thread], timeout: float) -> None:
    end = time.monotonic() + timeout
    for thread in threads:
        while thread.is_alive() and time.monotonic() < end:  # noqa: ASYNC110 - a thread
            await asyncio.sleep(0.02)
        assert not thread.is_alive(), "an old pod never finished"


def new_overlaps(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [p for p in pairs if p[0].startswith("new") or p[1].startswith("new")]


def topology_keys(topology: Topology) -> dict[str, Any]:
    return dict(topology.keys)


@pytest.mark.parametrize("store_type", OLD_TYPES)
async def test_twenty_messages_over_old_and_new_pods_never_overlap_a_new_pod(
    store_type: str, rasa_lock_topology: Topology, tmp_path: Path
) -> None:
    topology = rasa_lock_topology
    keys = topology_keys(topology)
    pods = write_pods(tmp_path, store_type, keys, keys, topology.mode)
    record = Record([], [])
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    new_pods = [pods.new(), pods.new()]
    try:
        # Rasa's ``redis`` store races among old pods all the time (see the module doc): one old
        # pod for it. Two ``concurrent_redis`` old pods race rarely, by Rasa's own design.
        old_pods = ("a", "b") if store_type == "concurrent_redis" else ("a",)
        threads = [run_old_pod(pods, record, cid, n, 10 // len(old_pods)) for n in old_pods]
        await asyncio.gather(*(
            record.hold(new_pods[i % 2], f"new:{i % 2}:{i}", cid, rasa=False) for i in range(10)
        ))
        await join(threads, 60)
    finally:
        for pod in new_pods:
            await pod.close()
    pairs = record.overlaps()
    print(f"{store_type}/{topology.mode}: {len(record.intervals)} served, overlapping pairs: "
          f"{pairs or 'none'} (old-old pairs are Rasa's own race); lost: {record.lost}")
    assert record.lost == []
    assert len(record.intervals) == 20
    assert new_overlaps(pairs) == [], f"a new pod overlapped: {pairs}"


@pytest.mark.parametrize("store_type", OLD_TYPES)
async def test_a_dead_old_pods_ticket_still_expires(
    store_type: str, standard_topology: Topology, tmp_path: Path
) -> None:
    topology = standard_topology  # one mode: the protocol code is shared by all three
    keys = topology_keys(topology)
    pods = write_pods(tmp_path, store_type, keys, keys, topology.mode)
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    dead = pods.old()
    dead.issue_ticket(cid, 2)  # drawn, never returned: the pod died
    new = pods.new()
    record = Record([], [])
    started = time.monotonic()
    try:
        thread = run_old_pod(pods, record, cid, "alive", 1)
        await record.hold(new, "new:0", cid, rasa=False)
        await join([thread], 20)
    finally:
        await new.close()
    assert record.lost == []
    assert len(record.intervals) == 2
    first = min(start for _, start, _ in record.intervals)
    assert 0.8 <= first - started <= 2 + 1.5, "served before the dead ticket expired, or long after"
    assert new_overlaps(record.overlaps()) == []


async def test_after_transition_until_the_previous_redis_gets_no_command(
    standard_topology: Topology, tmp_path: Path, fresh_redis_server: RedisServer
) -> None:
    topology = standard_topology  # one mode: the protocol code is shared by all three
    store_type = OLD_TYPES[0]
    old_keys = {"host": fresh_redis_server.host, "port": fresh_redis_server.port}
    until = time.time() + 1.5
    pods = write_pods(tmp_path, store_type, old_keys, topology_keys(topology), topology.mode,
                      until=repr(until))
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    new = pods.new()
    try:
        async with new.lock(cid):  # in transition: the previous Redis sees this cycle
            pass
        during = fresh_redis_server.info("commandstats")
        assert "cmdstat_set" in during or "cmdstat_evalsha" in during or "cmdstat_eval" in during
        await asyncio.sleep(max(until - time.time(), 0) + 0.1)
        fresh_redis_server.execute("CONFIG", "RESETSTAT")
        for _ in range(5):
            async with new.lock(cid):
                pass
        stats = fresh_redis_server.info("commandstats")
    finally:
        await new.close()
    commands = sorted(k for k in stats if k.startswith("cmdstat_"))
    assert all(c.startswith(("cmdstat_info", "cmdstat_config")) for c in commands), commands


@pytest.mark.parametrize("store_type", OLD_TYPES)
async def test_a_new_pod_cancelled_while_waiting_in_rasas_store_gives_its_ticket_back(
    store_type: str, standard_topology: Topology, tmp_path: Path
) -> None:
    topology = standard_topology  # one mode: the protocol code is shared by all three
    keys = topology_keys(topology)
    pods = write_pods(tmp_path, store_type, keys, keys, topology.mode)
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    old = pods.old()
    held = old.issue_ticket(cid, LIFETIME)  # an old pod holds the conversation
    new = pods.new()
    try:
        waiting = asyncio.create_task(new.lock(cid, lock_lifetime=LIFETIME).__aenter__())
        await asyncio.sleep(0.3)  # it has drawn its ticket in Rasa's store and polls
        lock = old.get_lock(cid)
        assert lock is not None and len(lock.tickets) == 2
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        old.finish_serving(cid, held)
        # The cancelled ticket is gone: an old pod is served at once, not after its lifetime.
        record = Record([], [])
        started = time.monotonic()
        await join([run_old_pod(pods, record, cid, "next", 1)], 10)
        assert record.lost == [] and record.intervals
        assert record.intervals[0][1] - started < LIFETIME / 2
    finally:
        await new.close()


@pytest.mark.parametrize("store_type", OLD_TYPES)
async def test_an_old_pods_stale_write_erasing_a_new_ticket_never_lets_both_in(
    store_type: str, standard_topology: Topology, tmp_path: Path
) -> None:
    """Rasa's race, staged with Rasa's own methods: right after a new pod drew its ticket at the
    head, an old pod's write from an earlier read erases it (``redis``: a GET-then-SET of the
    document; ``concurrent_redis``: ``cleanup`` deleting the keys it had seen empty) and the old
    pod takes the head. The new pod's confirming check finds its ticket gone, draws again and
    waits for the old pod."""
    topology = standard_topology  # one mode: the protocol code is shared by all three
    keys = topology_keys(topology)
    pods = write_pods(tmp_path, store_type, keys, keys, topology.mode)
    cid = f"conv-{uuid.uuid4().hex[:10]}"
    old = pods.old()
    new = pods.new()
    protocol = new.store.previous.protocol
    protocol.settle = 0.5  # room to stage the stale write inside the confirmation window
    stale = old.get_or_create_lock(cid)  # the old pod's read, before the new ticket exists
    entered: list[float] = []

    async def new_message() -> None:
        async with new.lock(cid, lock_lifetime=LIFETIME):
            entered.append(time.monotonic())

    try:
        task = asyncio.create_task(new_message())
        for _ in range(200):  # until the new pod's ticket is in Rasa's store
            lock = old.get_lock(cid)
            if lock is not None and lock.tickets:
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the new pod never drew its ticket")
        if store_type == "redis":
            number = stale.issue_ticket(LIFETIME)
            old.save_lock(stale)  # the stale SET: the new ticket is gone
        else:
            old.delete_lock(cid)  # cleanup's delete, after it had seen no ticket
            number = old.issue_ticket(cid, LIFETIME)
        assert not old.get_lock(cid).is_locked(number), "the old pod holds now"
        await asyncio.sleep(1.0)
        assert entered == [], "the new pod got in while the old pod held"
        released = time.monotonic()
        old.cleanup(cid, number)
        await asyncio.wait_for(task, 10)
        assert entered and entered[0] >= released
    finally:
        await new.close()


# ``concurrent_redis`` is Rasa Pro's; Rasa Open Source 3.6 has no such store (no test there).
if HAS_TIMER_STORES:

    async def test_rasas_concurrent_store_lets_two_old_pods_in_by_itself(
        standard_topology: Topology, tmp_path: Path
    ) -> None:
        """Why an old-old overlap is Rasa's, not the transition's: two pods of Rasa Pro's
        ``ConcurrentRedisLockStore`` and no Turnstile code at all, staged with Rasa's own methods.
        ``issue_ticket`` draws the number (INCR) and writes the ticket (SET) in two round trips; a
        pod whose INCR came first but whose SET lands after the other pod listed the tickets (KEYS)
        finds itself at the head too, while the other already holds."""
        keys = topology_keys(standard_topology)
        pods = write_pods(tmp_path, "concurrent_redis", keys, keys, standard_topology.mode)
        a, b = pods.old(), pods.old()
        cid = f"conv-{uuid.uuid4().hex[:10]}"
        # Pod a, inside issue_ticket: it read the lock and drew its number, its SET not yet sent.
        lock_a = a.get_or_create_lock(cid)
        lock_a.remove_expired_tickets()
        number_a = a.increment_ticket_number(lock_a)
        # Pod b runs all of issue_ticket and its first _acquire_lock check: it is at the head.
        number_b = b.issue_ticket(cid, LIFETIME)
        held_b = await asyncio.wait_for(b._acquire_lock(cid, number_b, POLL), 5)
        assert not held_b.is_locked(number_b)
        # Pod a's SET lands now; its own check finds the lower number at the head: it enters too.
        lock_a.concurrent_issue_ticket(LIFETIME, number_a)
        a.save_lock(lock_a)
        held_a = await asyncio.wait_for(a._acquire_lock(cid, number_a, POLL), 5)
        assert number_a < number_b
        assert not held_a.is_locked(number_a), "pod a waits: Rasa's store kept them apart"
        b.cleanup(cid, number_b)
        a.cleanup(cid, number_a)

    @pytest.mark.parametrize("moment", ["before its ticket is written", "right after"])
    async def test_an_old_pod_drawing_inside_a_new_pods_draw_never_holds_with_it(
        moment: str, standard_topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The race the loaded benchmark found (``bench/lock_overlaps.py``, 12 overlaps with a
        new pod per 1,000 bursts): an old pod draws while a new pod is inside its own draw.
        Drawn Rasa's way (INCR, then SET), the new pod's number was taken but its ticket
        unseen, so the old pod, with the next number, found itself at the head and held; then
        the new pod's ticket appeared at the head and it held too. Drawn *visible before
        counted*, the old pod either queues behind the new ticket or overwrites it under the
        same number (then the new pod draws again): either way one pod holds."""
        keys = topology_keys(standard_topology)
        pods = write_pods(tmp_path, "concurrent_redis", keys, keys, standard_topology.mode)
        old, new = pods.old(), pods.new()
        cid = f"conv-{uuid.uuid4().hex[:10]}"
        conn = new.store.previous.protocol.connection
        real_run = conn.run
        drawn: list[int] = []

        def old_message() -> None:
            """An old pod's issue_ticket and its first check: at the head, it holds."""
            number = old.issue_ticket(cid, LIFETIME)
            head = old.get_lock(cid)
            assert head is not None and not head.is_locked(number), "the old pod waits"
            drawn.append(number)

        async def run(op: Any, *, what: str = "command") -> Any:
            writes = what.startswith("SET") and not drawn
            if writes and moment == "before its ticket is written":
                old_message()
            result = await real_run(op, what=what)
            if writes and moment == "right after":
                old_message()
            return result

        monkeypatch.setattr(conn, "run", run)
        entered: list[float] = []

        async def new_message() -> None:
            async with new.lock(cid, lock_lifetime=LIFETIME):
                entered.append(time.monotonic())

        try:
            task = asyncio.create_task(new_message())
            for _ in range(200):  # until the old pod has drawn inside the new pod's draw
                if drawn:
                    break
                await asyncio.sleep(0.005)
            assert drawn, "the new pod never drew"
            await asyncio.sleep(1.0)  # the old pod holds all this time
            assert entered == [], "the new pod got in while the old pod held"
            released = time.monotonic()
            old.cleanup(cid, drawn[0])
            await asyncio.wait_for(task, 10)
            assert entered and entered[0] >= released
        finally:
            await new.close()
