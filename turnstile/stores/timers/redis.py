"""The Redis timer store: buckets over Cluster shards, batched reads and claims, outage fallback.

* **Layout.** Timers are spread over buckets (:mod:`turnstile.stores.timers.buckets`); the keys and
  scripts are in :mod:`turnstile.stores.timers.lua`.
* **Reads.** :meth:`RedisTimerStore.get_expired_timers` runs one script per bucket that returns
  the due timers *with* their data, all buckets in one pipeline (redis-py's cluster pipeline
  sends one batch per master, concurrently). Round trips do not grow with the number of timers.
* **Claims.** Rasa's claim is one script (delete if the scheduled time still matches);
  :meth:`RedisTimerStore.claim_timers` claims many in one pipeline. A manager's poll,
  :meth:`RedisTimerStore.claim_due`, *leases* due timers from every bucket in one script each:
  they stay in Redis, hidden from other pods for ``lease`` seconds, until :meth:`ack` deletes
  them after the callback (:meth:`extend` renews them while it runs). A pod that dies in
  between leaves leases that run out, and the timers fire on another pod. Claim ids make a
  retried claim return what the lost reply carried.
* **Outage.** An operation that still fails after ``fallback_after`` seconds of retries switches
  the store to memory (logged once). While in memory, nothing waits on Redis; a background task
  tries Redis every ``retry_interval`` and, once it answers, writes back what memory holds,
  newer wins (:mod:`turnstile.stores.timers.fallback`), and switches back (logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from redis import exceptions as rex

from turnstile.stores import metrics
from turnstile.stores._redis.connection import AnyRedis, RedisConnection
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.errors import StoreUnavailableError, TurnstileError
from turnstile.stores.timers.api import (
    BaseTimerStore,
    Claimed,
    Clock,
    SessionTimer,
    TimerRecord,
    TimerSettings,
    timer_from_dict,
)
from turnstile.stores.timers.fallback import Entry, FallbackJournal, Tombstone, entry_sender
from turnstile.stores.timers.lua import (
    ACK,
    CLAIM,
    CLAIM_DUE,
    EXTEND,
    MERGE,
    PAGE_SIZE,
    PUT,
    READ_DUE,
    BucketKeys,
    TimerKeys,
)

logger = logging.getLogger(__name__)

#: Entries per merge script call, and pairs per claim script call.
_BATCH: Final = 500
#: A read never pages further than this many rounds (PAGE_SIZE timers per bucket each).
_MAX_PAGES: Final = 10_000
#: The least time Redis remembers a claim id, so that a retried claim is recognised (ms).
_MIN_CLAIM_MEMORY_MS: Final = 10_000
#: How long Redis keeps a poll's claimed timers that the poller never acknowledged (ms): long
#: enough to outlast an outage, after which the poller asks again with the same claim id.
#: Acknowledged claims are forgotten on the poller's next call, so this costs memory only for
#: pollers that stopped for good.
_POP_MEMORY_MS: Final = 3_600_000

_Call = tuple[LuaScript, BucketKeys, list[Any]]


def _num(value: float) -> str:
    """A float as Redis and Lua parse it back to the same double."""
    return repr(float(value))


class RedisTimerStore(BaseTimerStore):
    """Timers in Redis (standard, cluster or sentinel), with an in-memory fallback.

    ``fallback=False`` turns the fallback off: an operation that still fails after its retries
    raises :class:`~turnstile.stores.errors.StoreUnavailableError` (the probe uses it).
    """

    def __init__(
        self,
        settings: TimerSettings | None = None,
        *,
        clock: Clock = time.time,
        retry_interval: float = 1.0,
        client_name: str = "turnstile-timers",
        fallback: bool = True,
    ) -> None:
        self.settings = settings or TimerSettings()
        redis = self.settings.redis
        budget = min(redis.failover_timeout, self.settings.fallback_after)
        self._conn = RedisConnection(replace(redis, failover_timeout=budget),
                                     client_name=client_name)
        self._keys = TimerKeys(self.settings.buckets, redis.key_prefix)
        # Retries of one claim happen within the retry budget; remember claims well beyond it.
        self._memory_ms = max(_MIN_CLAIM_MEMORY_MS, int(budget * 5000))
        #: Per bucket: the claim id whose reply was lost (ask again with it) ...
        self._unanswered: dict[int, str] = {}
        #: ... and the last claim id whose reply arrived (Redis may forget it).
        self._answered: dict[int, str] = {}
        #: Timers this store leased and not yet acknowledged: sender_id -> (claim id, record's
        #: written_at). An acknowledgement that cannot reach Redis becomes a journal tombstone.
        self._leases: dict[str, tuple[str, float]] = {}
        self._clock = clock
        self._retry_interval = retry_interval
        self._journal: FallbackJournal | None = None
        self._fallback = fallback
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False
        metrics.watch_fallback(self)

    @classmethod
    def from_kwargs(
        cls, kwargs: Mapping[str, Any] | None, *, url: str | None = None, **options: Any
    ) -> RedisTimerStore:
        """Build from Rasa's ``endpoint_config.kwargs``; raises ConfigurationError early."""
        return cls(TimerSettings.from_kwargs(kwargs, url=url), **options)

    # -- state ---------------------------------------------------------------------------------

    @property
    def keys(self) -> TimerKeys:
        return self._keys

    @property
    def lease(self) -> float:
        return self.settings.lease

    @property
    def using_fallback(self) -> bool:
        """Whether the store currently serves from memory."""
        return self._journal is not None

    @property
    def pending_writeback(self) -> int:
        """Timers and deletions held in memory for Redis."""
        return len(self._journal) if self._journal is not None else 0

    def _fall_back(self, exc: BaseException) -> FallbackJournal:
        if not self._fallback:
            raise exc
        if self._journal is None:
            self._journal = FallbackJournal()
            logger.warning(
                "Timer store: Redis (%s) is unreachable (%s); keeping timers in memory until "
                "it answers again",
                self.settings.redis.where, exc,
            )
            if not self._closed:
                self._recovery = asyncio.get_running_loop().create_task(
                    self._recover(), name="turnstile-timer-recovery"
                )
        return self._journal

    # -- the contract --------------------------------------------------------------------------

    async def store_timer(
        self,
        sender_id: str,
        session_id: str | None,
        scheduled_time: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        timer = SessionTimer.create_timer(sender_id, session_id, scheduled_time, metadata)
        record = TimerRecord(timer, self._clock())
        self._leases.pop(sender_id, None)
        if self._journal is not None:
            self._journal.put(record)
            return
        keys = self._keys.of(sender_id)
        try:
            await self._conn.eval(
                PUT, keys.keys, [sender_id, _num(timer.scheduled_time), record.encode()]
            )
        except StoreUnavailableError as exc:
            self._fall_back(exc).put(record)

    async def delete_timer(
        self, sender_id: str, only_if_scheduled_time: float | None = None
    ) -> bool:
        if self._journal is not None:
            return self._journal.delete(sender_id, only_if_scheduled_time, now=self._clock())
        expected = "" if only_if_scheduled_time is None else _num(only_if_scheduled_time)
        keys = self._keys.of(sender_id)
        self._leases.pop(sender_id, None)
        try:
            hits = await self._conn.eval(
                CLAIM, keys.claim_keys,
                [uuid.uuid4().hex, self._memory_ms, _num(self._clock()), sender_id, expected],
            )
        except StoreUnavailableError as exc:
            journal = self._fall_back(exc)
            if only_if_scheduled_time is None:
                journal.delete(sender_id, None, now=self._clock())
            return False
        return bool(int(hits[0]))

    async def get_timer(self, sender_id: str) -> SessionTimer | None:
        if self._journal is not None:
            return self._journal.get(sender_id)
        data_key = self._keys.of(sender_id).data
        try:
            raw = await self._conn.run(lambda c: c.hget(data_key, sender_id), what="timer get")
        except StoreUnavailableError as exc:
            self._fall_back(exc)
            return None
        return None if raw is None else TimerRecord.decode(str(raw)).timer

    async def get_expired_timers(self, cutoff_time: float | None = None) -> list[SessionTimer]:
        cutoff = self._clock() if cutoff_time is None else cutoff_time
        if self._journal is not None:
            return self._journal.expired(cutoff)
        try:
            return await self._read_due(cutoff)
        except StoreUnavailableError as exc:
            return self._fall_back(exc).expired(cutoff)

    async def claim_due(self, cutoff_time: float, limit: int) -> Claimed:
        """Lease due timers straight from every bucket, one script per bucket.

        Each bucket gives at most ``ceil(limit / buckets)`` timers (so a poll claims about
        ``limit``); ``more`` says a bucket had more due. The timers stay in Redis, hidden until
        ``cutoff_time + lease``; :meth:`ack` deletes them once fired. A bucket whose reply did
        not arrive (its master died, say) is asked again with the same claim id on the next
        call, so the timers Redis leased are returned then rather than a lease later; buckets
        that answered are unaffected by one that did not.
        """
        if self._journal is not None:
            return await super().claim_due(cutoff_time, limit)
        per_bucket = max(1, min(PAGE_SIZE, -(-limit // len(self._keys.buckets))))
        fresh = uuid.uuid4().hex
        ids = [self._unanswered.get(b, f"{fresh}.{b}") for b in range(len(self._keys.buckets))]
        expiry = _num(cutoff_time + self.settings.lease)
        calls: list[_Call] = [
            (CLAIM_DUE, keys,
             [ids[b], _POP_MEMORY_MS, _num(cutoff_time), per_bucket, self._answered.get(b, ""),
              expiry])
            for b, keys in enumerate(self._keys.buckets)
        ]
        replies = await self._each(calls, what="timer claim due")
        claimed: list[SessionTimer] = []
        more = False
        for bucket, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                self._unanswered[bucket] = ids[bucket]
                continue
            self._unanswered.pop(bucket, None)
            self._answered[bucket] = ids[bucket]
            for data in _decode_records([reply[1]]):
                timer = timer_from_dict(data)
                self._leases[timer.sender_id] = (ids[bucket], float(data.get("written_at", 0)))
                claimed.append(timer)
            more = more or int(reply[0]) >= per_bucket
        failures = [r for r in replies if isinstance(r, BaseException)]
        if failures and len(failures) == len(replies):
            if isinstance(failures[0], StoreUnavailableError):
                self._fall_back(failures[0])
                return Claimed([], more=False)
            raise failures[0]
        claimed.sort(key=_BY_TIME)
        return Claimed(claimed, more=more)  # failed buckets wait for the next regular poll

    async def ack(self, timers: Sequence[SessionTimer]) -> int:
        """Delete leased timers whose callbacks ran, if the lease is still this store's.

        Returns how many were deleted. When Redis cannot be reached the acknowledgement goes
        to the outage journal as a delete of exactly that timer (or an older one), written back
        when Redis returns; if the lease runs out first, another pod fires the timer again.
        """
        owned = [(t.sender_id, lease) for t in timers
                 if (lease := self._leases.pop(t.sender_id, None)) is not None]
        if not owned:
            return 0
        if self._journal is not None:
            return self._journal_acks(owned)
        calls = self._lease_calls(ACK, owned, [])
        try:
            replies = await self._batch(calls, what="timer ack")
        except StoreUnavailableError as exc:
            self._fall_back(exc)
            return self._journal_acks(owned)
        return sum(int(r) for r in replies)

    async def extend(self, timers: Sequence[SessionTimer]) -> int:
        """Renew the leases of timers whose callbacks still run, by ``lease`` seconds from now.

        Returns how many leases were still this store's. Best effort: a failure is left to
        the lease (the timer may then fire again elsewhere).
        """
        owned = [(t.sender_id, lease) for t in timers
                 if (lease := self._leases.get(t.sender_id)) is not None]
        if not owned or self._journal is not None:
            return 0
        calls = self._lease_calls(EXTEND, owned, [_num(self._clock() + self.settings.lease)])
        try:
            replies = await self._batch(calls, what="timer lease renewal")
        except StoreUnavailableError:
            return 0
        return sum(int(r) for r in replies)

    def _lease_calls(
        self, script: LuaScript, owned: Sequence[tuple[str, tuple[str, float]]], head: list[Any]
    ) -> list[_Call]:
        by_bucket: dict[int, list[Any]] = defaultdict(list)
        for sender, (claim_id, _) in owned:
            by_bucket[self._keys.bucket(sender)] += [sender, claim_id]
        return [
            (script, self._keys.buckets[bucket], head + args[start : start + 2 * _BATCH])
            for bucket, args in by_bucket.items()
            for start in range(0, len(args), 2 * _BATCH)
        ]

    def _journal_acks(self, owned: Sequence[tuple[str, tuple[str, float]]]) -> int:
        assert self._journal is not None
        for sender, (_, written_at) in owned:
            if not self._journal.known(sender):
                self._journal.restore(Tombstone(sender, written_at))
        return 0

    async def claim_timers(self, timers: Sequence[SessionTimer]) -> list[SessionTimer]:
        """Claim many due timers with one script per bucket, pipelined."""
        if not timers:
            return []
        if self._journal is not None:
            journal, now = self._journal, self._clock()
            return [t for t in timers if journal.delete(t.sender_id, t.scheduled_time, now=now)]
        by_bucket: dict[int, list[SessionTimer]] = defaultdict(list)
        for timer in timers:
            by_bucket[self._keys.bucket(timer.sender_id)].append(timer)
        calls: list[_Call] = []
        batches: list[list[SessionTimer]] = []
        claim_id = uuid.uuid4().hex
        for bucket, members in by_bucket.items():
            for start in range(0, len(members), _BATCH):
                chunk = members[start : start + _BATCH]
                args: list[Any] = [claim_id, self._memory_ms, _num(self._clock())]
                for t in chunk:
                    args += [t.sender_id, _num(t.scheduled_time)]
                calls.append((CLAIM, self._keys.buckets[bucket], args))
                batches.append(chunk)
        try:
            replies = await self._batch(calls, what="timer claim")
        except StoreUnavailableError as exc:
            self._fall_back(exc)
            return []
        return [t for chunk, hits in zip(batches, replies, strict=True)
                for t, hit in zip(chunk, hits, strict=True) if int(hit)]

    async def aclose(self) -> None:
        """Stop the recovery task, write back what memory holds if Redis answers, disconnect."""
        self._closed = True
        task, self._recovery = self._recovery, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        journal = self._journal
        if journal:
            try:
                await self._write_back(journal.entries())
                self._journal = None
            except TurnstileError as exc:
                logger.warning(
                    "Timer store closed while Redis (%s) is unreachable; %d timer change(s) "
                    "kept in memory are lost (%s)",
                    self.settings.redis.where, len(journal), exc,
                )
        await self._conn.close()

    # -- Redis I/O -----------------------------------------------------------------------------

    async def _read_due(self, cutoff: float) -> list[SessionTimer]:
        pages: list[list[SessionTimer]] = []
        offsets = dict.fromkeys(range(len(self._keys.buckets)), 0)
        for _ in range(_MAX_PAGES):
            if not offsets:
                break
            order = list(offsets.items())
            calls: list[_Call] = [
                (READ_DUE, self._keys.buckets[b], [_num(cutoff), offset, PAGE_SIZE])
                for b, offset in order
            ]
            replies = await self._batch(calls, what="timer read")
            pages.append(_decode_arrays(reply[1] for reply in replies))
            offsets = {
                bucket: offset + PAGE_SIZE
                for (bucket, offset), reply in zip(order, replies, strict=True)
                if int(reply[0]) >= PAGE_SIZE
            }
        if len(pages) == 1:
            due = pages[0]
        else:  # offset paging may see a timer twice when others are added meanwhile
            due = list({t.sender_id: t for page in pages for t in page}.values())
        due.sort(key=_BY_TIME)
        return due

    async def _batch(self, calls: Sequence[_Call], *, what: str) -> list[Any]:
        """Run scripts in one pipeline (one batch per master in Cluster), with retries."""
        if not calls:
            return []
        cluster = self._conn.is_cluster

        def pipeline(client: AnyRedis) -> Any:
            return client.pipeline() if cluster else client.pipeline(transaction=False)

        async def op(client: AnyRedis) -> list[Any]:
            pipe = pipeline(client)
            for script, keys, args in calls:
                # execute_command: redis-py refuses pipe.evalsha() in Cluster pipelines, yet routes
                # EVALSHA by its keys like any other command.
                pipe.execute_command("EVALSHA", script.sha, *_script_keys(script, keys), *args)
            results: list[Any] = list(await pipe.execute(raise_on_error=False))
            missing = [i for i, r in enumerate(results) if isinstance(r, rex.NoScriptError)]
            if missing:  # a new master after a failover starts with an empty script cache
                pipe = pipeline(client)
                for i in missing:
                    script, keys, args = calls[i]
                    pipe.execute_command("EVAL", script.source, *_script_keys(script, keys), *args)
                again = await pipe.execute(raise_on_error=False)
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results

        return await self._conn.run(op, what=what)

    async def _each(self, calls: Sequence[_Call], *, what: str) -> list[Any]:
        """Run scripts so that each succeeds or fails on its own: one concurrent call per
        script in Cluster (a pipeline fails as a whole when one master is down, losing the
        replies of the masters that did the work), one pipeline otherwise (one server: all or
        nothing anyway). Results are replies or exceptions, in order."""
        if self._conn.is_cluster:
            return list(await asyncio.gather(
                *(self._conn.eval(script, _script_keys(script, keys)[1:], args)
                  for script, keys, args in calls),
                return_exceptions=True,
            ))
        try:
            return await self._batch(calls, what=what)
        except TurnstileError as exc:
            return [exc] * len(calls)

    async def _write_back(self, entries: Sequence[Entry]) -> int:
        """Merge memory's entries into Redis, newer wins; returns how many were applied."""
        if not entries:
            await self._conn.run(lambda c: c.ping(), what="timer store ping")
            return 0
        by_bucket: dict[int, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_bucket[self._keys.bucket(entry_sender(entry))].append(entry)
        calls: list[_Call] = []
        for bucket, members in by_bucket.items():
            for start in range(0, len(members), _BATCH):
                chunk = members[start : start + _BATCH]
                groups: list[Any] = [len(chunk)]
                payloads: list[str] = []
                for e in chunk:
                    if isinstance(e, Tombstone):
                        groups += ["del", e.sender_id, _num(e.version), ""]
                    else:
                        groups += ["put", e.timer.sender_id, _num(e.written_at),
                                   _num(e.timer.scheduled_time)]
                        payloads.append(e.encode())
                calls.append((MERGE, self._keys.buckets[bucket], groups + payloads))
        replies = await self._batch(calls, what="timer write-back")
        return sum(int(r) for r in replies)

    async def _recover(self) -> None:
        """While in memory: try Redis every ``retry_interval``; write back, then switch back."""
        while self._journal is not None:
            await asyncio.sleep(self._retry_interval)
            journal = self._journal
            entries = journal.entries()
            try:
                applied = await self._write_back(entries)
            except StoreUnavailableError:
                continue
            except Exception:  # the task must outlive any surprise, or memory is never drained
                logger.exception("Timer store: writing timers back to Redis failed; will retry")
                continue
            journal.forget(entries)
            # Changes made during the write-back go straight to Redis after the switch; the
            # residue is merged with newer-wins, so a write that reached Redis first survives.
            residue = journal.entries()
            self._journal = None
            try:
                applied += await self._write_back(residue)
            except TurnstileError as exc:
                again = self._fall_back(exc)
                for entry in residue:
                    if not again.known(entry_sender(entry)):
                        again.restore(entry)
                return
            logger.warning(
                "Timer store: Redis (%s) answers again; wrote back %d of %d timer change(s) "
                "kept in memory (newer ones in Redis won) and switched back to Redis",
                self.settings.redis.where, applied, len(entries) + len(residue),
            )
            return


_BY_TIME = operator.attrgetter("scheduled_time")


def _decode_records(arrays: Iterable[str]) -> list[dict[str, Any]]:
    """Records from per-bucket JSON arrays, parsed as one array (one call into the C parser)."""
    inner = [a[1:-1] for a in arrays if len(a) > 2]
    if not inner:
        return []
    records: list[dict[str, Any]] = json.loads("[" + ",".join(inner) + "]")
    return records


def _decode_arrays(arrays: Iterable[str]) -> list[SessionTimer]:
    return [timer_from_dict(d) for d in _decode_records(arrays)]


def _script_keys(script: LuaScript, keys: BucketKeys) -> tuple[Any, ...]:
    """``numkeys, key...`` for a script (each script's KEYS are documented above it)."""
    if script is CLAIM or script is CLAIM_DUE:
        return (5, *keys.claim_keys)
    if script is READ_DUE:
        return (2, *keys.read_keys)
    if script is EXTEND:
        return (2, *keys.lease_keys)
    return (3, *keys.keys)
