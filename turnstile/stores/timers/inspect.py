"""Looking at a Redis timer store from outside: one conversation's pending timer, and the
soonest pending timers across buckets (``turnstile timers``).

Reads go straight to Redis through the store's connection and key layout (``timers.lua``'s
module doc): unlike the store's own reads they never fall back to memory, so an unreachable
Redis is an error here, not an empty answer. ``show`` reads the conversation's bucket only;
``list_timers`` reads the ``limit + 1`` lowest scores of every bucket's ``due`` set (one
pipeline; one batch per master in Cluster) and merges them, so its cost is bounded by the
limit and the bucket count, never by the number of timers. Both use only commands of the
timer store's ACL rule (``stores.acl``), so the bot's own user may run them.

A timer's score is its scheduled time until a poll leases it, then the lease's expiry; a
leased timer is being fired by a pod (``leased``), and is due again when the lease runs out.
Metadata values are never returned (they may carry user data): only their keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from turnstile.stores.timers.api import TimerRecord
from turnstile.stores.timers.redis import RedisTimerStore

#: Default bound of ``list_timers``.
DEFAULT_LIMIT: Final = 100


@dataclass(frozen=True)
class TimerView:
    """A pending timer: when it is due (or its lease ends), and a summary of its record."""

    sender_id: str
    bucket: int
    due: float  # the score: scheduled time, or the lease's expiry while leased
    scheduled_time: float | None
    session_id: str | None
    metadata_keys: tuple[str, ...]
    leased: bool

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "sender_id": self.sender_id,
            "bucket": self.bucket,
            "due": self.due,
            "due_in": round(self.due - now, 3),
            "scheduled_time": self.scheduled_time,
            "session_id": self.session_id,
            "metadata_keys": list(self.metadata_keys),
            "leased": self.leased,
        }


@dataclass(frozen=True)
class TimerListing:
    """The soonest pending timers, and whether more exist beyond the limit."""

    limit: int
    buckets: int
    stopped_at_limit: bool
    timers: list[TimerView]


def _view(sender_id: str, bucket: int, score: Any, raw: Any, lease: Any) -> TimerView:
    scheduled = session = None
    keys: tuple[str, ...] = ()
    if raw is not None:
        timer = TimerRecord.decode(str(raw)).timer
        scheduled, session = timer.scheduled_time, timer.session_id
        keys = tuple(sorted(str(k) for k in timer.metadata))
    return TimerView(sender_id, bucket, float(score), scheduled, session, keys, lease is not None)


async def show(store: RedisTimerStore, sender_id: str) -> TimerView | None:
    """The conversation's pending timer, or None; reads its bucket's keys only."""
    bucket = store.keys.bucket(sender_id)
    keys = store.keys.buckets[bucket]

    async def op(client: Any) -> list[Any]:
        # The bucket's keys share a hash tag, so this pipeline goes to one node.
        pipe = client.pipeline() if store._conn.is_cluster else client.pipeline(transaction=False)
        pipe.zscore(keys.due, sender_id)
        pipe.hget(keys.data, sender_id)
        pipe.hget(keys.leases, sender_id)
        return list(await pipe.execute())

    score, raw, lease = await store._conn.run(op, what="timer show")
    if score is None:
        return None
    return _view(sender_id, bucket, score, raw, lease)


async def list_timers(store: RedisTimerStore, limit: int = DEFAULT_LIMIT) -> TimerListing:
    """Up to ``limit`` pending timers, soonest first, across all buckets."""
    buckets = store.keys.buckets
    cluster = store._conn.is_cluster

    async def heads(client: Any) -> list[Any]:
        pipe = client.pipeline() if cluster else client.pipeline(transaction=False)
        for keys in buckets:
            # ZRANGEBYSCORE, not ZRANGE: the store's ACL rule grants the former
            pipe.zrangebyscore(keys.due, "-inf", "+inf", start=0, num=limit + 1,
                               withscores=True)
        return list(await pipe.execute())

    firsts = await store._conn.run(heads, what="timer list")
    merged = sorted(
        ((float(score), str(member), bucket)
         for bucket, pairs in enumerate(firsts) for member, score in pairs),
    )
    chosen = merged[:limit]

    async def records(client: Any) -> list[Any]:
        pipe = client.pipeline() if cluster else client.pipeline(transaction=False)
        for _, sender, bucket in chosen:
            pipe.hget(buckets[bucket].data, sender)
            pipe.hget(buckets[bucket].leases, sender)
        return list(await pipe.execute())

    found = await store._conn.run(records, what="timer list") if chosen else []
    views = [
        _view(sender, bucket, score, found[2 * i], found[2 * i + 1])
        for i, (score, sender, bucket) in enumerate(chosen)
    ]
    return TimerListing(limit, len(buckets), len(merged) > limit, views)
