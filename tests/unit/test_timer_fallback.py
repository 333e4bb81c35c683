"""While Redis is unreachable the Redis timer store works from memory and remembers what to
write back. No Redis here: the store points at a port nothing listens on."""

from __future__ import annotations

import logging
import socket

import pytest

from turnstile.stores.timers.api import SessionTimer, TimerRecord
from turnstile.stores.timers.fallback import FallbackJournal, Tombstone
from turnstile.stores.timers.redis import RedisTimerStore


def record(sender: str, scheduled: float, written_at: float) -> TimerRecord:
    return TimerRecord(SessionTimer(sender, "s", scheduled, {}), written_at)


def test_the_journal_serves_what_was_stored_and_keeps_one_entry_per_conversation():
    journal = FallbackJournal()
    journal.put(record("a", 10, 1))
    journal.put(record("a", 20, 2))
    journal.put(record("b", 30, 3))
    assert journal.get("a") == SessionTimer("a", "s", 20, {})
    assert [t.sender_id for t in journal.expired(25)] == ["a"]
    assert len(journal) == 2


def test_an_unconditional_delete_leaves_a_tombstone_versioned_now():
    journal = FallbackJournal()
    assert journal.delete("never-seen", None, now=50) is False
    assert journal.entries() == [Tombstone("never-seen", 50)]
    assert journal.known("never-seen")
    assert journal.get("never-seen") is None


def test_a_winning_claim_leaves_a_tombstone_versioned_with_the_claimed_record():
    journal = FallbackJournal()
    journal.put(record("a", 10, written_at=7))
    assert journal.delete("a", 11, now=99) is False
    assert journal.delete("a", 10, now=99) is True
    assert journal.delete("a", 10, now=99) is False
    assert journal.entries() == [Tombstone("a", 7)]


def test_a_losing_claim_on_an_unknown_conversation_changes_nothing():
    journal = FallbackJournal()
    assert journal.delete("x", 10, now=1) is False
    assert not journal


def test_forget_keeps_entries_that_changed_during_the_write_back():
    journal = FallbackJournal()
    journal.put(record("a", 10, 1))
    journal.put(record("b", 10, 1))
    snapshot = journal.entries()
    journal.put(record("a", 20, 2))
    journal.forget(snapshot)
    assert [t.sender_id for t in journal.expired(100)] == ["a"]
    assert journal.get("a") == SessionTimer("a", "s", 20, {})


@pytest.fixture
def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def offline_store(dead_port: int):
    store = RedisTimerStore.from_kwargs(
        {"host": "127.0.0.1", "port": dead_port, "fallback_after": 0}, retry_interval=3600
    )
    yield store
    await store.aclose()


async def test_the_store_keeps_working_in_memory_and_says_so_once(offline_store, caplog):
    with caplog.at_level(logging.WARNING):
        await offline_store.store_timer("a", "s1", 100.0, {"k": "v"})
        await offline_store.store_timer("b", "s1", 300.0)
        assert offline_store.using_fallback
        assert await offline_store.get_timer("a") == SessionTimer("a", "s1", 100.0, {"k": "v"})
        assert [t.sender_id for t in await offline_store.get_expired_timers(200)] == ["a"]
        assert await offline_store.delete_timer("a", only_if_scheduled_time=100.0) is True
        assert await offline_store.delete_timer("a", only_if_scheduled_time=100.0) is False
        assert await offline_store.get_expired_timers(200) == []
    assert caplog.text.count("keeping timers in memory") == 1
    assert offline_store.pending_writeback == 2  # b's timer and a's claim


async def test_a_failed_read_switches_to_memory_instead_of_raising(offline_store):
    assert await offline_store.get_expired_timers(10.0) == []
    assert await offline_store.get_timer("a") is None
    assert offline_store.using_fallback


async def test_closing_while_redis_is_down_reports_the_changes_lost(offline_store, caplog):
    await offline_store.store_timer("a", "s", 1.0)
    with caplog.at_level(logging.WARNING):
        await offline_store.aclose()
    assert "1 timer change(s) kept in memory are lost" in caplog.text
