"""Conversations map to buckets stably and evenly; buckets land evenly on Cluster slots."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from redis.crc import key_slot as redis_key_slot

from turnstile.stores.timers.buckets import (
    CLUSTER_SLOTS,
    DEFAULT_BUCKETS,
    bucket_of,
    bucket_tag,
    bucket_tags,
)
from turnstile.stores.timers.lua import TimerKeys


def key_slot(key: str) -> int:
    """The Cluster slot of a text key, by redis-py's ``key_slot`` (the one the library uses)."""
    return redis_key_slot(key.encode())


def test_a_conversation_maps_to_the_same_bucket_in_another_process_with_another_hash_seed():
    senders = [f"user-{i}" for i in range(200)]
    here = [bucket_of(s, 64) for s in senders]
    code = (
        "from turnstile.stores.timers.buckets import bucket_of;"
        "print([bucket_of(f'user-{i}', 64) for i in range(200)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert eval(out) == here


def test_known_mappings_never_change():
    # Changing these would orphan every timer stored by an earlier release.
    assert [bucket_of(s, 64) for s in ("alice", "bob", "", "ümlaut")] == [9, 18, 52, 2]
    assert bucket_tag(0) == "t0.403"
    assert bucket_tag(1) == "t1.638"
    assert key_slot("{t0.403}") < 16


@pytest.mark.parametrize("count", [1, 7, 64, 256])
def test_conversations_spread_evenly_over_buckets(count: int):
    n = 50_000
    counts = Counter(bucket_of(f"conversation-{i}", count) for i in range(n))
    assert set(counts) == set(range(count))
    share = n / count
    assert max(counts.values()) < share * 1.25 + 10
    assert min(counts.values()) > share * 0.75 - 10


def test_bucket_tags_are_distinct_and_hit_distinct_slots():
    tags = bucket_tags(1024)
    assert len(set(tags)) == 1024
    assert len({key_slot("{" + t + "}") for t in tags}) == 1024


def test_a_bucket_keeps_its_tag_whatever_the_bucket_count():
    assert bucket_tags(8) == bucket_tags(64)[:8]


def _per_master(slots: list[int], masters: int) -> list[int]:
    """Buckets per master when masters own equal contiguous ranges (redis-cli --cluster create)."""
    bounds = [m * CLUSTER_SLOTS // masters for m in range(masters + 1)]
    return [sum(bounds[m] <= s < bounds[m + 1] for s in slots) for m in range(masters)]


@pytest.mark.parametrize("masters", [3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 42])
def test_default_buckets_stay_within_1_5x_of_a_fair_share_per_master(masters: int):
    slots = [key_slot("{" + t + "}") for t in bucket_tags(DEFAULT_BUCKETS)]
    per_master = _per_master(slots, masters)
    assert max(per_master) <= 1.5 * DEFAULT_BUCKETS / masters
    assert min(per_master) >= 1


def test_three_masters_get_22_21_21_buckets():
    slots = [key_slot("{" + t + "}") for t in bucket_tags(DEFAULT_BUCKETS)]
    assert _per_master(slots, 3) == [22, 21, 21]


def test_key_slot_matches_redis_for_plain_and_tagged_keys():
    # Values from Redis' CLUSTER KEYSLOT.
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == 3443
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: whole key hashed
    assert key_slot("foo{}{bar}") != key_slot("bar")


def test_all_keys_of_a_bucket_share_one_slot_and_buckets_differ():
    keys = TimerKeys(64, key_prefix="bot1")
    slots = set()
    for bucket in keys.buckets:
        assert bucket.due.startswith("bot1:turnstile:timers:{")
        assert key_slot(bucket.due) == key_slot(bucket.data) == key_slot(bucket.claims)
        slots.add(key_slot(bucket.due))
    assert len(slots) == 64


def test_a_key_prefix_does_not_move_buckets():
    plain, prefixed = TimerKeys(16), TimerKeys(16, key_prefix="bot1")
    assert [key_slot(b.due) for b in plain.buckets] == [key_slot(b.due) for b in prefixed.buckets]
    assert plain.of("alice") != prefixed.of("alice")
    assert plain.bucket("alice") == prefixed.bucket("alice")
