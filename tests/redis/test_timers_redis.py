"""The Redis timer store on real Redis, in standalone, Cluster and Sentinel mode.

Each test uses its own ``key_prefix``, so the session-scoped servers are shared safely. Store
instances stand for Rasa replicas.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as sync_redis
from redis.crc import key_slot

from tests.platform.redis_servers import RedisCluster, store_kwargs
from tests.unit.test_timer_contract import TimerStoreContract
from turnstile.stores.errors import StoreUnavailableError
from turnstile.stores.timers.api import BaseTimerStore, SessionTimer
from turnstile.stores.timers.lua import CLAIM, CLAIM_DUE
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.redis import RedisTimerStore

MODES = ("standard", "cluster", "sentinel")
_FIXTURES = {"standard": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}


kwargs_for = store_kwargs


StoreFactory = Callable[..., RedisTimerStore]


@pytest.fixture(params=MODES)
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Stores on one topology sharing one fresh ``key_prefix`` (= one deployment)."""
    topology = request.getfixturevalue(_FIXTURES[request.param])
    prefix = "t" + uuid.uuid4().hex[:12]
    stores: list[RedisTimerStore] = []

    def make(**extra: Any) -> RedisTimerStore:
        store = RedisTimerStore.from_kwargs(kwargs_for(topology, key_prefix=prefix, **extra))
        stores.append(store)
        return store

    make.topology = topology  # type: ignore[attr-defined]
    yield make
    for store in stores:
        await store.aclose()


class TestRedisContract(TimerStoreContract):
    @pytest.fixture
    def store(self, make_store: StoreFactory) -> BaseTimerStore:
        return make_store()


async def test_a_second_store_sees_what_the_first_stored(make_store: StoreFactory):
    pod_a, pod_b = make_store(), make_store()
    await pod_a.store_timer("alice", "s1", 123.25, {"k": "v"})
    assert await pod_b.get_timer("alice") == SessionTimer("alice", "s1", 123.25, {"k": "v"})
    assert await pod_b.delete_timer("alice", only_if_scheduled_time=123.25) is True
    assert await pod_a.get_timer("alice") is None


async def test_many_due_timers_come_back_complete_and_oldest_first(make_store: StoreFactory):
    store = make_store()
    now = time.time()
    for i in range(5000):
        await store.store_timer(f"c{i}", f"s{i}", now - 5000 + i, {"i": i})
    for i in range(300):
        await store.store_timer(f"future{i}", "s", now + 3600)
    due = await store.get_expired_timers(now)
    assert [t.sender_id for t in due] == [f"c{i}" for i in range(5000)]
    assert due[1234] == SessionTimer("c1234", "s1234", now - 5000 + 1234, {"i": 1234})


async def test_a_read_pages_through_a_bucket_with_more_due_timers_than_a_page(
    make_store: StoreFactory,
):
    store = make_store(buckets=1)
    for i in range(4500):
        await store.store_timer(f"c{i}", "s", float(i))
    due = await store.get_expired_timers(10_000.0)
    assert len(due) == 4500
    assert len({t.sender_id for t in due}) == 4500


async def test_a_retried_claim_gets_its_timers_back_instead_of_losing_them(
    make_store: StoreFactory,
):
    """A failover can lose a claim's reply after Redis applied it; the retry (same claim id)
    must answer as the first call did, or no pod would ever fire those timers."""
    store = make_store(buckets=1)
    for i in range(5):
        await store.store_timer(f"c{i}", "s", float(i))
    keys = store.keys.buckets[0]
    args = ["claim-1", 10_000, "100", 10, "", "1000"]
    first = await store._conn.eval(CLAIM_DUE, keys.claim_keys, args)
    retry = await store._conn.eval(CLAIM_DUE, keys.claim_keys, args)
    other = await store._conn.eval(CLAIM_DUE, keys.claim_keys,
                                   ["claim-2", 10_000, "100", 10, "claim-1", "1000"])
    assert first == retry
    assert int(first[0]) == 5
    assert other == [0, "[]"]
    acked = await store._conn.eval(CLAIM_DUE, keys.claim_keys, args)
    assert acked == [0, "[]"]  # claim-1 was acknowledged by claim-2's call and forgotten
    await store.store_timer("x", "s", 1.0)
    single = ["claim-3", 10_000, "100", "x", "1.0"]
    assert await store._conn.eval(CLAIM, keys.claim_keys, single) == [1]
    assert await store._conn.eval(CLAIM, keys.claim_keys, single) == [1]
    again = ["claim-4", 10_000, "100", "x", "1.0"]
    assert await store._conn.eval(CLAIM, keys.claim_keys, again) == [0]


async def test_timers_whose_claim_reply_was_lost_come_back_on_the_next_poll(
    make_store: StoreFactory,
):
    store = make_store(buckets=4)
    for i in range(40):
        await store.store_timer(f"c{i}", "s", float(i))
    real_each = store._each
    lost: list[int] = []

    async def lose_bucket_zero(calls, *, what):
        replies = await real_each(calls, what=what)
        lost.append(int(replies[0][0]))
        replies[0] = StoreUnavailableError("reply lost in a failover")
        return replies

    store._each = lose_bucket_zero  # type: ignore[method-assign]
    first, _ = await store.claim_due(100.0, limit=1000)
    store._each = real_each  # type: ignore[method-assign]
    second, _ = await store.claim_due(100.0, limit=1000)
    assert lost[0] > 0
    assert len(second) == lost[0]
    assert sorted(t.sender_id for t in first + second) == sorted(f"c{i}" for i in range(40))
    assert (await store.claim_due(100.0, limit=1000)).timers == []


async def test_a_polled_timer_is_leased_hidden_and_due_again_when_nobody_acknowledges(
    make_store: StoreFactory,
):
    pod_a, pod_b = make_store(lease=30), make_store(lease=30)
    await pod_a.store_timer("alice", "s1", 100.0, {"k": 1})
    (claimed,), _ = await pod_a.claim_due(100.0, limit=10)
    assert claimed == SessionTimer("alice", "s1", 100.0, {"k": 1})
    # Leased until 130 (the poll's cutoff plus the lease): nobody else sees or claims it.
    assert (await pod_b.claim_due(129.0, limit=10)).timers == []
    assert await pod_b.get_expired_timers(129.0) == []
    pod_b._clock = lambda: 129.0
    assert await pod_b.delete_timer("alice", only_if_scheduled_time=100.0) is False
    # Pod A never acknowledged (it died): the timer is due again, with its scheduled time.
    (again,), _ = await pod_b.claim_due(131.0, limit=10)
    assert again == claimed
    assert await pod_a.ack([claimed]) == 0  # A's lease is gone; B's is the live one
    assert await pod_b.get_timer("alice") == claimed
    assert await pod_b.ack([again]) == 1
    assert await pod_b.get_timer("alice") is None


async def test_a_renewed_lease_stays_hidden_and_a_replaced_timer_ends_the_lease(
    make_store: StoreFactory,
):
    pod_a, pod_b = make_store(lease=30), make_store(lease=30)
    await pod_a.store_timer("bob", "s1", 100.0)
    await pod_a.store_timer("carol", "s1", 100.0)
    bob, carol = (await pod_a.claim_due(100.0, limit=10)).timers
    pod_a._clock = lambda: 120.0
    assert await pod_a.extend([bob, carol]) == 2  # both leased until 150 now
    assert (await pod_b.claim_due(149.0, limit=10)).timers == []
    # A message arrives for carol while her old timer's callback runs: a new timer replaces it.
    await pod_b.store_timer("carol", "s2", 500.0)
    assert await pod_a.ack([bob, carol]) == 1  # bob deleted; carol's new timer kept
    assert (await pod_b.get_timer("carol")).session_id == "s2"  # type: ignore[union-attr]
    assert await pod_b.get_timer("bob") is None


async def test_a_lease_that_ran_out_can_be_claimed_with_rasas_conditional_delete(
    make_store: StoreFactory,
):
    pod_a, pod_b = make_store(lease=30), make_store(lease=30)
    await pod_a.store_timer("dave", "s1", 100.0)
    await pod_a.claim_due(100.0, limit=10)
    pod_b._clock = lambda: 131.0
    (due,) = await pod_b.get_expired_timers(131.0)
    assert due.scheduled_time == 100.0
    assert await pod_b.claim_timers([due]) == [due]
    assert await pod_b.get_timer("dave") is None
    await pod_a.store_timer("erin", "s1", 100.0)
    await pod_a.claim_due(100.0, limit=10)
    assert await pod_b.delete_timer("erin") is True  # a cancel removes a leased timer


async def test_an_acknowledgement_during_an_outage_is_written_back_as_a_delete(
    make_store: StoreFactory,
):
    pod_a, reader = make_store(lease=30), make_store()
    await pod_a.store_timer("frank", "s1", 100.0)
    (frank,), _ = await pod_a.claim_due(100.0, limit=10)
    pod_a._fall_back(RuntimeError("simulated outage"))
    assert await pod_a.ack([frank]) == 0
    for _ in range(100):
        if not pod_a.using_fallback:
            break
        await asyncio.sleep(0.05)
    assert not pod_a.using_fallback
    assert await reader.get_timer("frank") is None


async def test_three_managers_fire_each_of_1000_due_timers_exactly_once(
    make_store: StoreFactory,
):
    seeder = make_store()
    now = time.time()
    for i in range(1000):
        await seeder.store_timer(f"c{i}", "s", now - 1 - (i % 7))
    fired: Counter[str] = Counter()

    async def on_expired(timer: SessionTimer) -> None:
        fired[timer.sender_id] += 1
        await asyncio.sleep(0)

    managers = [
        TimerManager(make_store(), on_expired, poll_interval=0.05, max_batch=200)
        for _ in range(3)
    ]
    await asyncio.gather(*(m.start() for m in managers))
    for _ in range(200):  # bounded: at most ~10 s
        if sum(fired.values()) >= 1000:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a duplicate, if any, would arrive now
    await asyncio.gather(*(m.stop() for m in managers))
    assert set(fired) == {f"c{i}" for i in range(1000)}
    assert set(fired.values()) == {1}
    assert await seeder.get_expired_timers() == []


async def test_timers_due_before_start_up_fire_once_when_managers_start(
    make_store: StoreFactory,
):
    await_store = make_store()
    for i in range(20):
        await await_store.store_timer(f"c{i}", "s", time.time() - 3600)
    await await_store.aclose()
    fired: list[str] = []

    async def on_expired(timer: SessionTimer) -> None:
        fired.append(timer.sender_id)

    managers = [TimerManager(make_store(), on_expired, poll_interval=30) for _ in range(2)]
    await asyncio.gather(*(m.start() for m in managers))  # start-up recovery runs inside start
    await asyncio.gather(*(m.stop() for m in managers))
    assert sorted(fired) == sorted(f"c{i}" for i in range(20))


async def test_newer_timers_in_redis_win_over_an_outages_older_ones(make_store: StoreFactory):
    pod_a, pod_b = make_store(), make_store()
    clock_a = [1000.0]
    pod_a._clock = lambda: clock_a[0]  # pod A's writes carry written_at = 1000
    # Pod A loses Redis and keeps two timers and a deletion in memory.
    journal = pod_a._fall_back(RuntimeError("simulated outage"))
    await pod_a.store_timer("both", "from-a", 50.0)
    await pod_a.store_timer("only-a", "from-a", 60.0)
    await pod_a.delete_timer("deleted-by-a")
    assert len(journal) == 3
    # Meanwhile pod B (clock later than 1000) writes to Redis.
    await pod_b.store_timer("both", "from-b", 70.0)
    await pod_b.store_timer("deleted-by-a", "from-b", 80.0)
    old = make_store()
    old._clock = lambda: 10.0
    await old.store_timer("older-in-redis", "old", 90.0)
    await pod_a.store_timer("older-in-redis", "from-a", 95.0)
    # Redis answers pod A again: the write-back runs within a retry interval.
    for _ in range(100):
        if not pod_a.using_fallback:
            break
        await asyncio.sleep(0.05)
    assert not pod_a.using_fallback
    assert (await pod_b.get_timer("both")).session_id == "from-b"  # type: ignore[union-attr]
    assert (await pod_b.get_timer("only-a")).session_id == "from-a"  # type: ignore[union-attr]
    assert await pod_b.get_timer("deleted-by-a") is not None  # B wrote it after A's delete
    assert (await pod_b.get_timer("older-in-redis")).session_id == "from-a"  # type: ignore[union-attr]


async def test_a_claim_during_an_outage_removes_that_timer_and_older_ones_not_newer_ones(
    make_store: StoreFactory,
):
    def store_at(clock: float) -> RedisTimerStore:
        store = make_store()
        store._clock = lambda: clock
        return store

    pod_a, reader = store_at(1000.0), make_store()
    await store_at(10.0).store_timer("same", "before-outage", 5.0)
    pod_a._fall_back(RuntimeError("simulated outage"))
    await pod_a.store_timer("same", "during-outage", 20.0)
    await pod_a.store_timer("raced", "during-outage", 30.0)
    assert await pod_a.delete_timer("same", only_if_scheduled_time=20.0)
    assert await pod_a.delete_timer("raced", only_if_scheduled_time=30.0)
    await store_at(5000.0).store_timer("raced", "written-later-elsewhere", 40.0)
    for _ in range(100):
        if not pod_a.using_fallback:
            break
        await asyncio.sleep(0.05)
    assert not pod_a.using_fallback
    assert await reader.get_timer("same") is None
    raced = await reader.get_timer("raced")
    assert raced is not None
    assert raced.session_id == "written-later-elsewhere"


async def test_a_cluster_spreads_timers_over_all_masters_within_1_5x_of_a_share(
    redis_cluster: RedisCluster,
):
    store = RedisTimerStore.from_kwargs(kwargs_for(redis_cluster, key_prefix="spread"))
    try:
        for i in range(3000):
            await store.store_timer(f"conversation-{i}", "s", 1.0)
        per_master: Counter[int] = Counter()
        masters = redis_cluster.masters()
        for master in masters:
            client = sync_redis.Redis(host=master.host, port=master.port, decode_responses=True)
            try:
                for key in client.scan_iter(match="spread:turnstile:timers:*:due", count=1000):
                    assert redis_cluster.master_for_slot(key_slot(key.encode())) is master
                    per_master[master.port] += int(client.zcard(key))
            finally:
                client.close()
        assert sum(per_master.values()) == 3000
        assert len(per_master) == len(masters) == 3
        assert max(per_master.values()) <= 1.5 * 3000 / 3
    finally:
        await store.aclose()
