"""Rasa's timer store contract, as behaviour every Turnstile timer store shows.

:class:`TimerStoreContract` holds the checks; a subclass provides a ``store`` fixture. The
in-memory store runs them here; ``tests/redis/test_timers_redis.py`` runs them on real Redis in
standalone, Cluster and Sentinel mode.
"""

from __future__ import annotations

import time

import pytest

from turnstile.stores.timers.api import BaseTimerStore, SessionTimer
from turnstile.stores.timers.memory import InMemoryTimerStore

NOW = time.time()


class TimerStoreContract:
    """Checks shared by all stores; subclasses define the ``store`` fixture."""

    async def test_a_stored_timer_is_returned_with_all_its_fields(self, store: BaseTimerStore):
        await store.store_timer("alice", "s1", NOW + 60, {"lang": "de", "n": [1, 2]})
        timer = await store.get_timer("alice")
        assert timer == SessionTimer("alice", "s1", NOW + 60, {"lang": "de", "n": [1, 2]})

    async def test_an_unknown_conversation_has_no_timer(self, store: BaseTimerStore):
        assert await store.get_timer("nobody") is None

    async def test_metadata_defaults_to_an_empty_mapping(self, store: BaseTimerStore):
        await store.store_timer("bob", None, NOW + 1)
        timer = await store.get_timer("bob")
        assert timer is not None
        assert timer.session_id is None
        assert dict(timer.metadata) == {}

    async def test_storing_again_replaces_the_timer(self, store: BaseTimerStore):
        await store.store_timer("carol", "s1", NOW + 10)
        await store.store_timer("carol", "s2", NOW + 20, {"x": 1})
        assert await store.get_timer("carol") == SessionTimer("carol", "s2", NOW + 20, {"x": 1})
        assert await store.get_expired_timers(NOW + 15) == []

    async def test_expired_timers_are_those_at_or_before_the_cutoff(self, store: BaseTimerStore):
        await store.store_timer("early", "s", NOW - 5)
        await store.store_timer("exact", "s", NOW)
        await store.store_timer("late", "s", NOW + 5)
        expired = await store.get_expired_timers(NOW)
        assert sorted(t.sender_id for t in expired) == ["early", "exact"]

    async def test_reading_expired_timers_never_deletes_them(self, store: BaseTimerStore):
        await store.store_timer("dave", "s", NOW - 1)
        assert len(await store.get_expired_timers(NOW)) == 1
        assert len(await store.get_expired_timers(NOW)) == 1
        assert await store.get_timer("dave") is not None

    async def test_expired_timers_default_to_now(self, store: BaseTimerStore):
        await store.store_timer("past", "s", time.time() - 100)
        await store.store_timer("future", "s", time.time() + 3600)
        assert [t.sender_id for t in await store.get_expired_timers()] == ["past"]

    async def test_unconditional_delete_reports_whether_a_timer_existed(
        self, store: BaseTimerStore
    ):
        await store.store_timer("erin", "s", NOW + 1)
        assert await store.delete_timer("erin") is True
        assert await store.get_timer("erin") is None
        assert await store.delete_timer("erin") is False

    async def test_a_claim_with_the_scheduled_time_deletes(self, store: BaseTimerStore):
        scheduled = NOW + 0.123456789
        await store.store_timer("frank", "s", scheduled)
        assert await store.delete_timer("frank", only_if_scheduled_time=scheduled) is True
        assert await store.get_timer("frank") is None

    async def test_a_claim_on_a_rescheduled_timer_fails_and_keeps_it(
        self, store: BaseTimerStore
    ):
        await store.store_timer("gina", "s", NOW)
        await store.store_timer("gina", "s", NOW + 30)
        assert await store.delete_timer("gina", only_if_scheduled_time=NOW) is False
        assert await store.get_timer("gina") == SessionTimer("gina", "s", NOW + 30, {})

    async def test_a_claim_differing_by_a_millisecond_fails(self, store: BaseTimerStore):
        await store.store_timer("hank", "s", NOW)
        assert await store.delete_timer("hank", only_if_scheduled_time=NOW + 0.001) is False
        assert await store.get_timer("hank") is not None

    async def test_only_one_of_many_claims_wins(self, store: BaseTimerStore):
        await store.store_timer("ivy", "s", NOW - 1)
        (timer,) = await store.get_expired_timers(NOW)
        results = [
            await store.delete_timer("ivy", only_if_scheduled_time=timer.scheduled_time)
            for _ in range(5)
        ]
        assert results == [True, False, False, False, False]

    async def test_batch_claims_return_each_timer_to_one_claimer(self, store: BaseTimerStore):
        for i in range(50):
            await store.store_timer(f"c{i}", "s", NOW - i)
        due = await store.get_expired_timers(NOW)
        first = await store.claim_timers(due)
        second = await store.claim_timers(due)
        assert sorted(t.sender_id for t in first) == sorted(f"c{i}" for i in range(50))
        assert second == []
        assert await store.get_expired_timers(NOW) == []

    async def test_claim_due_hands_out_each_due_timer_once_and_reports_a_backlog(
        self, store: BaseTimerStore
    ):
        for i in range(300):
            await store.store_timer(f"c{i}", "s", NOW - 1 - i)
        await store.store_timer("future", "s", NOW + 60)
        seen: list[str] = []
        for _ in range(100):  # bounded
            claimed, more = await store.claim_due(NOW, limit=64)
            assert len(claimed) <= 2 * 64
            seen += [t.sender_id for t in claimed]
            if not more:
                break
        seen += [t.sender_id for t in (await store.claim_due(NOW, limit=64)).timers]
        assert sorted(seen) == sorted(f"c{i}" for i in range(300))
        assert await store.get_timer("future") is not None
        assert (await store.claim_due(NOW, limit=64)).timers == []

    async def test_deleting_one_conversation_leaves_the_others(self, store: BaseTimerStore):
        await store.store_timer("a", "s", NOW - 1)
        await store.store_timer("b", "s", NOW - 1)
        await store.delete_timer("a")
        assert [t.sender_id for t in await store.get_expired_timers(NOW)] == ["b"]

    async def test_unusual_conversation_ids_round_trip(self, store: BaseTimerStore):
        for sender in ["", "{tag}", "with space", "ümlaut-😀", "a\nb", "x" * 300]:
            await store.store_timer(sender, "s", NOW - 1, {"sender": sender})
        expired = {t.sender_id for t in await store.get_expired_timers(NOW)}
        assert expired == {"", "{tag}", "with space", "ümlaut-😀", "a\nb", "x" * 300}
        assert await store.delete_timer("{tag}", only_if_scheduled_time=NOW - 1)


class TestInMemoryContract(TimerStoreContract):
    @pytest.fixture
    def store(self) -> BaseTimerStore:
        return InMemoryTimerStore()


async def test_closing_the_in_memory_store_forgets_its_timers():
    store = InMemoryTimerStore()
    await store.store_timer("a", "s", NOW)
    store.close()
    assert await store.get_timer("a") is None
